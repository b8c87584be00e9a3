// Package commonspool adapts go-commons-pool (github.com/jolestar/go-commons-pool/v2)
// factories to kpool's factory.KeyedFactory, so that a PooledObjectFactory
// written for go-commons-pool serves a kpool pool unchanged.
//
// It is a package of its own, apart from package factory, so that only the
// programs that use the adapter link go-commons-pool: package factory and
// keyedpool depend on the standard library alone. Imports go one way:
// commonspool imports factory, never the reverse.
package commonspool
