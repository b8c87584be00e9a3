// Package ilist is an intrusive doubly-linked list: the links live inside
// the elements, so pushing and removing allocate nothing and an element can
// sit in several lists at once through several Links fields.
package ilist

import "unsafe"

// Links are the list pointers an element embeds, one Links per list the
// element can belong to. The zero value is an element in no list.
type Links[T any] struct {
	prev, next *T
	in         bool
}

// In reports whether the element is in a list through these links.
func (l *Links[T]) In() bool { return l.in }

// List is a list of *T linked through the Links that its accessor returns.
// The zero value is not usable; make one with New. Not safe for concurrent
// use.
type List[T any] struct {
	head, tail *T
	n          int
	off        uintptr // of the Links field in T
}

// New returns an empty list whose elements are linked through the Links that
// links returns for each element. links must return a field of the element
// it is given (it panics otherwise): New calls it once, on a zero T, to learn
// where that field lies, so that the list reaches the links of an element
// without calling links again (an indirect call on every step of every
// push and remove).
func New[T any](links func(*T) *Links[T]) List[T] {
	var z T
	base := uintptr(unsafe.Pointer(&z))
	off := uintptr(unsafe.Pointer(links(&z))) - base
	if off+unsafe.Sizeof(Links[T]{}) > unsafe.Sizeof(z) {
		panic("ilist: New with links that are not a field of the element")
	}
	return List[T]{off: off}
}

// links returns e's Links of this list: the field at l.off, within e.
func (l *List[T]) links(e *T) *Links[T] {
	return (*Links[T])(unsafe.Add(unsafe.Pointer(e), l.off))
}

// Len returns the number of elements in the list.
func (l *List[T]) Len() int { return l.n }

// Front returns the first element, or nil.
func (l *List[T]) Front() *T { return l.head }

// Back returns the last element, or nil.
func (l *List[T]) Back() *T { return l.tail }

// Next returns the element after e, or nil.
func (l *List[T]) Next(e *T) *T { return l.links(e).next }

// Prev returns the element before e, or nil.
func (l *List[T]) Prev(e *T) *T { return l.links(e).prev }

// PushFront inserts e at the front. e must not be in a list through the same
// Links.
func (l *List[T]) PushFront(e *T) {
	le := l.links(e)
	if le.in {
		panic("ilist: PushFront of an element already in a list")
	}
	le.in, le.prev, le.next = true, nil, l.head
	if l.head != nil {
		l.links(l.head).prev = e
	} else {
		l.tail = e
	}
	l.head = e
	l.n++
}

// PushBack inserts e at the back. e must not be in a list through the same
// Links.
func (l *List[T]) PushBack(e *T) {
	le := l.links(e)
	if le.in {
		panic("ilist: PushBack of an element already in a list")
	}
	le.in, le.prev, le.next = true, l.tail, nil
	if l.tail != nil {
		l.links(l.tail).next = e
	} else {
		l.head = e
	}
	l.tail = e
	l.n++
}

// InsertBefore inserts e just before mark, which must be in this list. e
// must not be in a list through the same Links.
func (l *List[T]) InsertBefore(e, mark *T) {
	le, lm := l.links(e), l.links(mark)
	if le.in {
		panic("ilist: InsertBefore of an element already in a list")
	}
	if !lm.in {
		panic("ilist: InsertBefore a mark not in a list")
	}
	le.in, le.prev, le.next = true, lm.prev, mark
	if lm.prev != nil {
		l.links(lm.prev).next = e
	} else {
		l.head = e
	}
	lm.prev = e
	l.n++
}

// Remove takes e out of the list. e must be in this list.
func (l *List[T]) Remove(e *T) {
	le := l.links(e)
	if !le.in {
		panic("ilist: Remove of an element not in a list")
	}
	if le.prev != nil {
		l.links(le.prev).next = le.next
	} else {
		l.head = le.next
	}
	if le.next != nil {
		l.links(le.next).prev = le.prev
	} else {
		l.tail = le.prev
	}
	le.in, le.prev, le.next = false, nil, nil
	l.n--
}

// PopFront removes and returns the first element, or nil.
func (l *List[T]) PopFront() *T {
	e := l.head
	if e != nil {
		l.Remove(e)
	}
	return e
}
