// Package config reads kpool's YAML configuration files: the pool's limits
// and evictor settings (keyedpool.Config), how connections are made
// (grpcfactory.Config), the services and how their endpoints are found
// (static lists, Consul), the HTTP listen address and the metrics settings.
//
// Load checks a file completely before anyone uses it: unknown fields,
// values of the wrong type and invalid values are errors that name the
// file, the line and the field, as in
//
//	kpool.yaml:12: pool.min_idle_per_key: min_idle_per_key is -3, want 0 or more
//
// Pool and gRPC settings are checked by building the real keyedpool and
// grpcfactory configurations, so the file accepts exactly what the library
// accepts. examples/kpool.yaml in the repository shows every key.
package config
