// Package discovery finds the endpoints of a service and routes borrows and
// RPCs over them.
package discovery
