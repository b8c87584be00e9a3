package grpcpool

import "errors"

// Errors of this package. Match them with errors.Is: they are wrapped with
// detail (the field of an invalid Config, the target and gRPC's reason of a
// failed connect).
var (
	// ErrInvalidConfig is wrapped by the error New returns for a Config it
	// refuses; the message names the field.
	ErrInvalidConfig = errors.New("grpcpool: invalid config")

	// ErrConnect is wrapped by the error Make and Activate return when the
	// connection does not become READY within ConnectTimeout, or its first
	// attempt fails (refused, TLS handshake, ...); gRPC's reason follows.
	ErrConnect = errors.New("grpcpool: connect failed")

	// ErrUnusable is wrapped by the error Validate and Activate return for a
	// connection in TRANSIENT_FAILURE or SHUTDOWN, and by the error Borrow
	// returns when every connection it was lent in a row was down.
	ErrUnusable = errors.New("grpcpool: connection unusable")

	// ErrNotServing is wrapped by the error Validate returns when the
	// backend's health service answers anything but SERVING.
	ErrNotServing = errors.New("grpcpool: backend not serving")
)
