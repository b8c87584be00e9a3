package keyedpool

import (
	"sync/atomic"
	"time"

	"github.com/kpool-go/kpool/keyedpool/internal/ilist"
)

// waiter is a blocked borrower. Waiters are reused; a grant is set under the
// pool's lock and announced on ready, which holds at most one token.
type waiter[K comparable, V any] struct {
	sub    *subPool[K, V]
	ticket uint64 // the borrower's place in line, kept if it must wait again
	g      grant[K, V]
	ready  chan struct{}
	timer  *time.Timer
	links  ilist.Links[waiter[K, V]] // in sub.waiters
	next   *waiter[K, V]             // in waitQueue.free or waitQueue.woken
}

func waiterLinks[K comparable, V any](w *waiter[K, V]) *ilist.Links[waiter[K, V]] { return &w.links }

func lineLinks[K comparable, V any](sp *subPool[K, V]) *ilist.Links[subPool[K, V]] {
	return &sp.lineLinks
}

// waitQueue holds the blocked borrowers of every key, in the order they
// came (their tickets), so that each event finds the borrower it serves
// without walking those it cannot serve.
//
// Each key keeps its own waiters in a list by ticket: an object or a share
// of a key goes to the key's first waiter. Room freed pool-wide goes to the
// oldest waiter among the keys that can take room; those keys are kept in
// a min-heap by the ticket of their first waiter (ready). A key that
// cannot take room for reasons of its own (at MaxTotalPerKey, or objects
// on their way will serve its waiters) is parked: taken off the heap, but
// still in keys, until the pool unparks it when that may have changed.
// Parking is lazy: the pool parks a key when it finds it cannot take room,
// and unparks it when its count, makes or activations go down, when a
// borrower queues on it, or when the limits change.
//
// So an event costs O(log k) for k keys waiting, whatever the number of
// waiters, plus O(log k) for each key it parks; each park is paid for by
// the event that queued or unparked the key.
//
// A waitQueue is protected by the pool's mu.
type waitQueue[K comparable, V any] struct {
	n int // waiters, all keys
	// tickets: the last ticket issued. Written under the pool's mu, read
	// without it by the lanes (laneTicket).
	tickets atomic.Uint64
	keys    ilist.List[subPool[K, V]] // keys with waiters, parked or not
	ready   []*subPool[K, V]          // min-heap of keys that may take room, by first ticket
	free    *waiter[K, V]             // waiters for reuse, linked by next
	// woken: waiters granted something, out of the queue, to be woken by
	// Pool.unlock once mu is released; linked by next, first granted first.
	woken, wokenLast *waiter[K, V]
}

func newWaitQueue[K comparable, V any]() waitQueue[K, V] {
	return waitQueue[K, V]{keys: ilist.New(lineLinks[K, V])}
}

// Len returns the number of waiters.
func (q *waitQueue[K, V]) Len() int { return q.n }

// issue returns a new ticket, later than every ticket issued before: an
// even number, so that the odd ones between are laneTicket's.
func (q *waitQueue[K, V]) issue() uint64 {
	return q.tickets.Add(2)
}

// laneTicket returns the place in line of a borrower lent an object from a
// lane, which takes no ticket of its own, to keep the lanes free of a word
// every core writes: the odd number after the last ticket issued. So it
// comes after every borrower that took a ticket before it and before every
// one after; lane borrowers between the same two tickets are equals,
// queued in the order they come back. Safe without the pool's mu.
func (q *waitQueue[K, V]) laneTicket() uint64 {
	return q.tickets.Load() + 1
}

// get returns a waiter for reuse, or a new one.
func (q *waitQueue[K, V]) get() *waiter[K, V] {
	w := q.free
	if w == nil {
		return &waiter[K, V]{ready: make(chan struct{}, 1)}
	}
	q.free = w.next
	w.next = nil
	return w
}

// wake puts w, just granted something and out of the queue, on the list of
// waiters to wake once the lock is released.
func (q *waitQueue[K, V]) wake(w *waiter[K, V]) {
	if q.wokenLast == nil {
		q.woken = w
	} else {
		q.wokenLast.next = w
	}
	q.wokenLast = w
}

// put keeps w, no longer queued and its ready channel drained, for reuse.
func (q *waitQueue[K, V]) put(w *waiter[K, V]) {
	w.g, w.sub = grant[K, V]{}, nil
	w.next = q.free
	q.free = w
}

// add queues w on sp at the place its ticket gives it, and returns the
// ticket; 0 issues a new one, which goes last. A borrower takes its ticket
// when it first comes the pool-wide way (see borrowState), so it usually
// goes last; one that waited or was lent before goes back to its place,
// ahead of every waiter of sp that came after it. Such a borrower was
// served recently, so the walk from the front is short. The key is
// unparked, since a new waiter may be what lets it take room.
func (q *waitQueue[K, V]) add(w *waiter[K, V], sp *subPool[K, V], ticket uint64) uint64 {
	w.sub = sp
	if ticket == 0 {
		ticket = q.issue()
	}
	w.ticket = ticket
	l := &sp.waiters
	if l.Len() == 0 {
		q.keys.PushBack(sp)
	}
	if b := l.Back(); b == nil || b.ticket <= ticket {
		l.PushBack(w)
	} else {
		mark := l.Front()
		for mark.ticket <= ticket { // behind its equals: they came back first
			mark = l.Next(mark)
		}
		l.InsertBefore(w, mark)
	}
	q.n++
	if sp.readyAt == 0 {
		q.push(sp)
	} else if l.Front() == w {
		q.up(sp.readyAt - 1)
	}
	return ticket
}

// remove takes w out of the queue.
func (q *waitQueue[K, V]) remove(w *waiter[K, V]) {
	sp := w.sub
	l := &sp.waiters
	first := l.Front() == w
	l.Remove(w)
	q.n--
	switch {
	case l.Len() == 0:
		q.keys.Remove(sp)
		q.park(sp)
	case first && sp.readyAt != 0:
		q.down(sp.readyAt - 1) // its first ticket is later now
	}
}

// first returns the key, among those not parked, whose first waiter came
// first; nil if there is none.
func (q *waitQueue[K, V]) first() *subPool[K, V] {
	if len(q.ready) == 0 {
		return nil
	}
	return q.ready[0]
}

// any returns a waiter, for serving them all whatever their order; nil
// when none waits.
func (q *waitQueue[K, V]) any() *waiter[K, V] {
	if sp := q.keys.Front(); sp != nil {
		return sp.waiters.Front()
	}
	return nil
}

// park takes sp off the heap: it cannot take room now.
func (q *waitQueue[K, V]) park(sp *subPool[K, V]) {
	i := sp.readyAt - 1
	if i < 0 {
		return
	}
	last := len(q.ready) - 1
	q.swap(i, last)
	q.ready[last] = nil
	q.ready = q.ready[:last]
	sp.readyAt = 0
	if i < last {
		q.down(i)
		q.up(i)
	}
}

// unpark puts sp, if it has waiters, back on the heap: it may take room.
func (q *waitQueue[K, V]) unpark(sp *subPool[K, V]) {
	if sp.readyAt == 0 && sp.waiters.Len() > 0 {
		q.push(sp)
	}
}

// unparkAll unparks every key with waiters.
func (q *waitQueue[K, V]) unparkAll() {
	for sp := q.keys.Front(); sp != nil; sp = q.keys.Next(sp) {
		q.unpark(sp)
	}
}

func (q *waitQueue[K, V]) push(sp *subPool[K, V]) {
	q.ready = append(q.ready, sp)
	sp.readyAt = len(q.ready)
	q.up(len(q.ready) - 1)
}

func (q *waitQueue[K, V]) less(i, j int) bool {
	return q.ready[i].waiters.Front().ticket < q.ready[j].waiters.Front().ticket
}

func (q *waitQueue[K, V]) swap(i, j int) {
	q.ready[i], q.ready[j] = q.ready[j], q.ready[i]
	q.ready[i].readyAt = i + 1
	q.ready[j].readyAt = j + 1
}

func (q *waitQueue[K, V]) up(i int) {
	for i > 0 {
		parent := (i - 1) / 2
		if !q.less(i, parent) {
			return
		}
		q.swap(i, parent)
		i = parent
	}
}

func (q *waitQueue[K, V]) down(i int) {
	for n := len(q.ready); ; {
		least := i
		if l := 2*i + 1; l < n && q.less(l, least) {
			least = l
		}
		if r := 2*i + 2; r < n && q.less(r, least) {
			least = r
		}
		if least == i {
			return
		}
		q.swap(i, least)
		i = least
	}
}
