package keyedpool

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/kpool-go/kpool/keyedpool/internal/ilist"
)

func newLine(key string) *subPool[string, int] {
	return &subPool[string, int]{key: key, waiters: ilist.New(waiterLinks[string, int])}
}

// queued returns the tickets of sp's waiters, front first.
func queued(sp *subPool[string, int]) []uint64 {
	var ts []uint64
	for w := sp.waiters.Front(); w != nil; w = sp.waiters.Next(w) {
		ts = append(ts, w.ticket)
	}
	return ts
}

func TestWaitQueueKeepsEachKeyInTicketOrder(t *testing.T) {
	q := newWaitQueue[string, int]()
	a := newLine("a")
	var ws []*waiter[string, int]
	for range 4 {
		w := q.get()
		q.add(w, a, 0)
		ws = append(ws, w)
	}
	if got, want := queued(a), []uint64{2, 4, 6, 8}; !slices.Equal(got, want) {
		t.Fatalf("tickets = %v, want %v", got, want)
	}
	// The first is served and must wait again: it goes back to its place,
	// ahead of those that came after it, and keeps its ticket.
	q.remove(ws[0])
	q.remove(ws[1])
	if got := q.add(ws[1], a, 4); got != 4 {
		t.Errorf("requeued ticket = %d, want 4", got)
	}
	q.add(ws[0], a, 2)
	if got, want := queued(a), []uint64{2, 4, 6, 8}; !slices.Equal(got, want) {
		t.Errorf("after requeue: tickets = %v, want %v", got, want)
	}
	// A new waiter goes last, with a ticket no one had.
	w := q.get()
	if got := q.add(w, a, 0); got != 10 {
		t.Errorf("new ticket = %d, want 10", got)
	}
	if q.Len() != 5 {
		t.Errorf("Len() = %d, want 5", q.Len())
	}
	// Borrowers lent from lanes between two tickets hold the odd number
	// between: after the first, before the second, and behind their
	// equals that queued before them.
	if got := q.laneTicket(); got != 11 {
		t.Fatalf("laneTicket() = %d, want 11", got)
	}
	q.remove(ws[2])
	l1, l2 := q.get(), q.get()
	q.add(l1, a, 5)
	q.add(l2, a, 5)
	q.add(ws[2], a, 6)
	if got, want := queued(a), []uint64{2, 4, 5, 5, 6, 8, 10}; !slices.Equal(got, want) {
		t.Errorf("with lane borrowers: tickets = %v, want %v", got, want)
	}
	if f := a.waiters.Next(a.waiters.Next(a.waiters.Front())); f != l1 || a.waiters.Next(f) != l2 {
		t.Error("equal tickets not in the order they queued")
	}
}

func TestWaitQueueFirstIsOldestUnparkedKey(t *testing.T) {
	q := newWaitQueue[string, int]()
	a, b, c := newLine("a"), newLine("b"), newLine("c")
	wa := q.get()
	q.add(wa, a, 0) // 1
	wb := q.get()
	q.add(wb, b, 0) // 2
	q.add(q.get(), c, 0)
	q.add(q.get(), a, 0) // 4
	if got := q.first(); got != a {
		t.Fatalf("first() = %v, want a", got.key)
	}
	// a cannot take room (say, at its per-key limit): the next oldest.
	q.park(a)
	if got := q.first(); got != b {
		t.Fatalf("a parked: first() = %v, want b", got.key)
	}
	// Its first waiter leaving moves b behind c.
	q.remove(wb)
	if got := q.first(); got != c {
		t.Fatalf("b empty: first() = %v, want c", got.key)
	}
	if b.readyAt != 0 || b.lineLinks.In() {
		t.Errorf("a key without waiters is still queued")
	}
	// Unparked, a is first again, by its oldest ticket.
	q.unpark(a)
	if got := q.first(); got != a {
		t.Fatalf("a unparked: first() = %v, want a", got.key)
	}
	// a's first leaves: its next ticket, 4, is later than c's, 3.
	q.remove(wa)
	if got := q.first(); got != c {
		t.Fatalf("first() = %v, want c", got.key)
	}
	// Unparking a key without waiters does nothing.
	q.unpark(b)
	if b.readyAt != 0 {
		t.Errorf("unpark of a key without waiters put it in the heap")
	}
}

func TestWaitQueueParkedKeyComesBackOnNewWaiter(t *testing.T) {
	q := newWaitQueue[string, int]()
	a, b := newLine("a"), newLine("b")
	q.add(q.get(), a, 0)
	q.add(q.get(), b, 0)
	q.park(a)
	q.park(b)
	if q.first() != nil {
		t.Fatalf("all parked: first() = %v, want nil", q.first().key)
	}
	q.add(q.get(), b, 0)
	if got := q.first(); got != b {
		t.Fatalf("after a new waiter on b: first() = %v, want b", got)
	}
}

func TestWaitQueueAnyServesEveryWaiter(t *testing.T) {
	q := newWaitQueue[string, int]()
	keys := []*subPool[string, int]{newLine("a"), newLine("b"), newLine("c")}
	for i := range 10 {
		q.add(q.get(), keys[i%3], 0)
	}
	q.park(keys[1])
	n := 0
	for w := q.any(); w != nil; w = q.any() {
		q.remove(w)
		q.put(w)
		n++
	}
	if n != 10 || q.Len() != 0 || q.first() != nil || q.keys.Len() != 0 {
		t.Errorf("served %d waiters, Len %d, keys %d, want 10, 0, 0", n, q.Len(), q.keys.Len())
	}
}

// The heap against a model: after random adds, removes, parks and unparks,
// first is the unparked key with the oldest first waiter.
func TestWaitQueueModel(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	q := newWaitQueue[string, int]()
	keys := make([]*subPool[string, int], 20)
	for i := range keys {
		keys[i] = newLine(string(rune('a' + i)))
	}
	parked := map[*subPool[string, int]]bool{}
	var all []*waiter[string, int]
	for step := range 20000 {
		switch op := r.IntN(10); {
		case op < 4 || len(all) == 0:
			sp := keys[r.IntN(len(keys))]
			w := q.get()
			q.add(w, sp, 0)
			delete(parked, sp)
			all = append(all, w)
		case op < 8:
			i := r.IntN(len(all))
			w := all[i]
			all = slices.Delete(all, i, i+1)
			sp := w.sub
			q.remove(w)
			q.put(w)
			if sp.waiters.Len() == 0 {
				delete(parked, sp)
			}
		case op < 9:
			sp := keys[r.IntN(len(keys))]
			if sp.waiters.Len() > 0 {
				q.park(sp)
				parked[sp] = true
			}
		default:
			sp := keys[r.IntN(len(keys))]
			q.unpark(sp)
			delete(parked, sp)
		}
		var want *subPool[string, int]
		for _, sp := range keys {
			if f := sp.waiters.Front(); f != nil && !parked[sp] && (want == nil || f.ticket < want.waiters.Front().ticket) {
				want = sp
			}
		}
		if got := q.first(); got != want {
			t.Fatalf("step %d: first() = %v, want %v", step, got, want)
		}
		if q.Len() != len(all) {
			t.Fatalf("step %d: Len() = %d, want %d", step, q.Len(), len(all))
		}
	}
}
