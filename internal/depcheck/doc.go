// Package depcheck holds no code: its test checks the import rules of
// DESIGN.md against the dependency graph `go list -deps` reports, so that a
// new import that breaks one (a third-party library in keyedpool, the
// evictor importing the pool) fails the tests and names the chain of
// imports that pulls it in.
//
// A test package of its own, under internal/, because the rules are about
// several packages at once and no package should import the checker.
package depcheck
