package evictor_test

import (
	"strings"
	"testing"
	"time"

	"github.com/kpool-go/kpool/evictor"
)

func TestDefaultPolicy(t *testing.T) {
	s := evictor.Settings{MinEvictableIdle: 30 * time.Minute, SoftMinEvictableIdle: time.Minute, MinIdle: 2}
	tests := []struct {
		name  string
		s     evictor.Settings
		idle  time.Duration
		count int
		want  bool
	}{
		{"fresh", s, time.Second, 5, false},
		{"at the hard limit", s, 30 * time.Minute, 1, false},
		{"past the hard limit, even below min idle", s, 30*time.Minute + 1, 1, true},
		{"past the soft limit above min idle", s, time.Minute + 1, 3, true},
		{"past the soft limit at min idle", s, time.Minute + 1, 2, false},
		{"soft limit off", evictor.Settings{MinEvictableIdle: time.Hour}, 59 * time.Minute, 100, false},
		{"hard limit off", evictor.Settings{MinEvictableIdle: -1}, 1000 * time.Hour, 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := evictor.Candidate{Key: "k", IdleTime: tt.idle, IdleCount: tt.count}
			if got := (evictor.DefaultPolicy{}).Evict(tt.s, c); got != tt.want {
				t.Errorf("Evict(%+v, idle %v, count %d) = %v, want %v", tt.s, tt.idle, tt.count, got, tt.want)
			}
		})
	}
}

func TestPolicyFunc(t *testing.T) {
	var p evictor.Policy = evictor.PolicyFunc(func(_ evictor.Settings, c evictor.Candidate) bool {
		return c.Key == "old"
	})
	if !p.Evict(evictor.Settings{}, evictor.Candidate{Key: "old"}) || p.Evict(evictor.Settings{}, evictor.Candidate{Key: "new"}) {
		t.Error("PolicyFunc did not call its function")
	}
}

func TestKeyedPolicyFuncHandsTheKeyWithItsType(t *testing.T) {
	type addr struct {
		host string
		port int
	}
	var got addr
	p := evictor.KeyedPolicyFunc[addr](func(_ evictor.Settings, key addr, _ evictor.Candidate) bool {
		got = key
		return key.port == 0
	})
	want := addr{"db1", 5432}
	if p.Evict(evictor.Settings{}, evictor.Candidate{Key: want}) || got != want {
		t.Errorf("Evict(key %v) = true, saw key %v; want false, %v", want, got, want)
	}
	if !p.Evict(evictor.Settings{}, evictor.Candidate{Key: addr{host: "db2"}}) {
		t.Errorf("Evict(key with port 0) = false, want true")
	}
}

func TestKeyedPolicyFuncNilKeyOfInterfaceType(t *testing.T) {
	p := evictor.KeyedPolicyFunc[any](func(_ evictor.Settings, key any, _ evictor.Candidate) bool { return key == nil })
	if !p.Evict(evictor.Settings{}, evictor.Candidate{Key: nil}) {
		t.Error("Evict(nil key) = false, want the policy handed a nil key")
	}
}

func TestKeyedPolicyFuncPanicsOnAKeyOfAnotherType(t *testing.T) {
	p := evictor.KeyedPolicyFunc[string](func(evictor.Settings, string, evictor.Candidate) bool { return true })
	defer func() {
		msg, _ := recover().(string)
		if !strings.Contains(msg, "KeyedPolicyFunc[string]") || !strings.Contains(msg, "of type int") {
			t.Errorf("Evict(int key) panicked with %q, want a message naming string and int", msg)
		}
	}()
	p.Evict(evictor.Settings{}, evictor.Candidate{Key: 42})
}
