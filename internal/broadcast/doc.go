// Package broadcast hands the latest state of something watched (a
// service's endpoints) and the errors met while watching it to any number
// of subscribers, each in its own goroutine and in order, without letting a
// slow subscriber hold up the publisher or the others.
//
// A Hub keeps the last state published and whether the last lookup failed,
// so a subscriber that joins late starts from them. States are full
// snapshots: a subscriber that falls behind gets only the newest of the
// states queued for it, while every error is delivered.
//
// Loops runs one lookup loop per name, started by its first subscriber and
// stopped with its last, publishing to that name's Hub: the watch the
// Consul and DNS resolvers share among the watchers of one service.
package broadcast
