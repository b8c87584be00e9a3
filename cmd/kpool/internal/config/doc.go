// Package config reads kpool's YAML configuration files: the pool's limits
// and evictor settings (keyedpool.Config), how connections are made
// (grpcpool.Config), the services and how their endpoints are found
// (static lists, Consul, DNS), the HTTP listen address and the metrics
// settings.
//
// Load checks a file completely before anyone uses it: unknown fields,
// values of the wrong type and invalid values are errors that name the
// file, the line and the field, as in
//
//	kpool.yaml:12: pool.min_idle_per_key: min_idle_per_key is -3, want 0 or more
//
// The pool, grpc, consul and dns sections are turned into
// keyedpool.Config, grpcpool.Config, consul.Config and dns.Config and
// checked by their Validate (and a dns section's name by
// dns.Config.CheckName), so the file accepts exactly what the libraries
// accept; each field error they return is put at its key's line.
// examples/kpool.yaml in the repository shows every key.
//
// A file is refused, at the line where it passes the bound, when it is
// larger than MaxFileSize, holds more than MaxEntries entries, nests
// deeper than MaxDepth, or has aliases that expand it past what
// MaxEntries allows: so a hostile file is refused in milliseconds and a
// few MiB, however its aliases multiply.
package config
