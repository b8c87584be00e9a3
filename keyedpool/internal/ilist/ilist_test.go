package ilist_test

import (
	"slices"
	"testing"

	"github.com/kpool-go/kpool/keyedpool/internal/ilist"
)

type node struct {
	v    int
	a, b ilist.Links[node]
}

func linksA(n *node) *ilist.Links[node] { return &n.a }
func linksB(n *node) *ilist.Links[node] { return &n.b }

func values(l *ilist.List[node]) []int {
	var out []int
	for e := l.Front(); e != nil; e = l.Next(e) {
		out = append(out, e.v)
	}
	return out
}

func TestPushRemove(t *testing.T) {
	nodes := make([]node, 5)
	for i := range nodes {
		nodes[i].v = i
	}
	tests := []struct {
		name string
		do   func(l *ilist.List[node])
		want []int
	}{
		{"empty", func(*ilist.List[node]) {}, nil},
		{"push back keeps order", func(l *ilist.List[node]) {
			l.PushBack(&nodes[0])
			l.PushBack(&nodes[1])
			l.PushBack(&nodes[2])
		}, []int{0, 1, 2}},
		{"push front reverses", func(l *ilist.List[node]) {
			l.PushFront(&nodes[0])
			l.PushFront(&nodes[1])
			l.PushFront(&nodes[2])
		}, []int{2, 1, 0}},
		{"remove middle", func(l *ilist.List[node]) {
			l.PushBack(&nodes[0])
			l.PushBack(&nodes[1])
			l.PushBack(&nodes[2])
			l.Remove(&nodes[1])
		}, []int{0, 2}},
		{"remove ends", func(l *ilist.List[node]) {
			l.PushBack(&nodes[0])
			l.PushBack(&nodes[1])
			l.PushBack(&nodes[2])
			l.Remove(&nodes[0])
			l.Remove(&nodes[2])
		}, []int{1}},
		{"insert before middle", func(l *ilist.List[node]) {
			l.PushBack(&nodes[0])
			l.PushBack(&nodes[2])
			l.InsertBefore(&nodes[1], &nodes[2])
		}, []int{0, 1, 2}},
		{"insert before front", func(l *ilist.List[node]) {
			l.PushBack(&nodes[1])
			l.InsertBefore(&nodes[0], &nodes[1])
			l.Remove(&nodes[1])
			l.PushBack(&nodes[2])
		}, []int{0, 2}},
		{"pop front", func(l *ilist.List[node]) {
			l.PushBack(&nodes[3])
			l.PushBack(&nodes[4])
			if got := l.PopFront(); got != &nodes[3] {
				t.Errorf("PopFront() = %v, want node 3", got)
			}
		}, []int{4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i := range nodes {
				nodes[i].a = ilist.Links[node]{}
			}
			l := ilist.New(linksA)
			tt.do(&l)
			if got := values(&l); !slices.Equal(got, tt.want) {
				t.Errorf("list = %v, want %v", got, tt.want)
			}
			if l.Len() != len(tt.want) {
				t.Errorf("Len() = %d, want %d", l.Len(), len(tt.want))
			}
			if len(tt.want) == 0 {
				if l.Front() != nil || l.Back() != nil {
					t.Errorf("Front(), Back() = %v, %v, want nil, nil", l.Front(), l.Back())
				}
			} else if got, want := l.Back().v, tt.want[len(tt.want)-1]; got != want {
				t.Errorf("Back() = %d, want %d", got, want)
			}
		})
	}
}

func TestTwoListsAtOnce(t *testing.T) {
	nodes := []node{{v: 0}, {v: 1}, {v: 2}}
	la, lb := ilist.New(linksA), ilist.New(linksB)
	for i := range nodes {
		la.PushBack(&nodes[i])
		lb.PushFront(&nodes[i])
	}
	la.Remove(&nodes[1])
	if got, want := values(&la), []int{0, 2}; !slices.Equal(got, want) {
		t.Errorf("list a = %v, want %v", got, want)
	}
	if got, want := values(&lb), []int{2, 1, 0}; !slices.Equal(got, want) {
		t.Errorf("list b = %v, want %v", got, want)
	}
	if nodes[1].a.In() || !nodes[1].b.In() {
		t.Errorf("node 1 In() = %v/%v, want false/true", nodes[1].a.In(), nodes[1].b.In())
	}
}

func TestMisusePanics(t *testing.T) {
	n := &node{}
	l := ilist.New(linksA)
	mustPanic(t, "Remove of absent element", func() { l.Remove(n) })
	l.PushBack(n)
	mustPanic(t, "PushBack twice", func() { l.PushBack(n) })
	mustPanic(t, "PushFront twice", func() { l.PushFront(n) })
	mustPanic(t, "InsertBefore of present element", func() { l.InsertBefore(n, n) })
	mustPanic(t, "InsertBefore absent mark", func() { l.InsertBefore(&node{}, &node{}) })
}

func mustPanic(t *testing.T, name string, f func()) {
	t.Helper()
	defer func() {
		if recover() == nil {
			t.Errorf("%s did not panic", name)
		}
	}()
	f()
}

// New refuses an accessor that returns links outside the element: the list
// would write through them into memory it does not own.
func TestNewRefusesLinksOutsideTheElement(t *testing.T) {
	var stray ilist.Links[node]
	defer func() {
		if recover() == nil {
			t.Error("New with links outside the element did not panic")
		}
	}()
	ilist.New(func(*node) *ilist.Links[node] { return &stray })
}

// Two lists over the two links of the same elements stay apart.
func TestListsThroughDifferentLinksAreIndependent(t *testing.T) {
	a, b := ilist.New(linksA), ilist.New(linksB)
	ns := []*node{{v: 1}, {v: 2}, {v: 3}}
	for _, n := range ns {
		a.PushBack(n)
		b.PushFront(n)
	}
	a.Remove(ns[1])
	if got := values(&a); !slices.Equal(got, []int{1, 3}) {
		t.Errorf("a = %v, want [1 3]", got)
	}
	if got := values(&b); !slices.Equal(got, []int{3, 2, 1}) {
		t.Errorf("b = %v, want [3 2 1]", got)
	}
}
