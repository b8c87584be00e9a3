package discovery

import "errors"

// Errors of this package. Match them with errors.Is: they are wrapped with
// detail (the service, the endpoint, the offending field).
var (
	// ErrNoEndpoints is wrapped, with the service's name and its last
	// lookup error if any, by the error Router.Borrow and the RPCs of a
	// Router's Conn (status Unavailable) return for a service that has no
	// endpoints at the moment.
	ErrNoEndpoints = errors.New("discovery: no endpoints")

	// ErrClosed is returned by a Router's methods after Close, and to
	// borrowers still waiting for a service's first snapshot when Close is
	// called.
	ErrClosed = errors.New("discovery: router closed")

	// ErrEndpointRemoved is wrapped by the error the Router's pool gets when
	// it tries to make, activate or validate a connection to an endpoint
	// that no service lists any more: such connections are destroyed rather
	// than lent.
	ErrEndpointRemoved = errors.New("discovery: endpoint removed")

	// ErrInvalidConfig is matched by the *FieldError of each missing field
	// of a RouterConfig, which Validate and NewRouter return joined with
	// keyedpool's for the Pool field.
	ErrInvalidConfig = errors.New("discovery: invalid config")
)
