package keyedpool_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kpool-go/kpool/evictor"
	"github.com/kpool-go/kpool/internal/testfactory"
	"github.com/kpool-go/kpool/keyedpool"
)

func TestConfigDefaults(t *testing.T) {
	p, _ := newPool(t, keyedpool.Config{})
	if got, want := p.Config(), keyedpool.DefaultConfig(); got != want {
		t.Errorf("Config() of New(Config{}) = %+v, want DefaultConfig() %+v", got, want)
	}
	want := keyedpool.Config{
		MaxTotalPerKey: 8, MaxIdlePerKey: 8, MaxSharesPerObject: 1,
		NumTestsPerEvictionRun: 3, MinEvictableIdle: 30 * time.Minute, EvictionPolicy: evictor.DefaultPolicy{},
		MakeBackoffBase: time.Second, MakeBackoffMax: 30 * time.Second, FactoryTimeout: 30 * time.Second,
	}
	if got := keyedpool.DefaultConfig(); got != want {
		t.Errorf("DefaultConfig() = %+v, want %+v", got, want)
	}
	if got := keyedpool.Fail.String(); got != "Fail" {
		t.Errorf("Fail.String() = %q", got)
	}
}

func TestConfigInvalid(t *testing.T) {
	for _, tt := range []struct {
		cfg   keyedpool.Config
		field string
	}{
		{keyedpool.Config{MinIdlePerKey: -1}, "MinIdlePerKey"},
		{keyedpool.Config{MinIdlePerKey: 9}, "MaxIdlePerKey"},
		{keyedpool.Config{MinIdlePerKey: 3, MaxTotalPerKey: 2}, "MaxTotalPerKey"},
		{keyedpool.Config{WhenExhausted: 7}, "WhenExhausted"},
		{keyedpool.Config{MaxWait: -1}, "MaxWait"},
		{keyedpool.Config{MaxSharesPerObject: -2}, "MaxSharesPerObject"},
		{keyedpool.Config{SoftMinEvictableIdle: -1}, "SoftMinEvictableIdle"},
		{keyedpool.Config{MaxLifetime: -1}, "MaxLifetime"},
		{keyedpool.Config{MaxLifetimeJitter: -1}, "MaxLifetimeJitter"},
		{keyedpool.Config{Abandoned: &keyedpool.AbandonedConfig{Timeout: -1}}, "Abandoned.Timeout"},
		{keyedpool.Config{MakeFailureThreshold: -1}, "MakeFailureThreshold"},
		{keyedpool.Config{MakeBackoffBase: -1}, "MakeBackoffBase"},
		{keyedpool.Config{MakeBackoffMax: -1}, "MakeBackoffMax"},
		{keyedpool.Config{MakeBackoffBase: time.Minute, MakeBackoffMax: time.Second}, "MakeBackoffMax"},
	} {
		t.Run(tt.field, func(t *testing.T) {
			_, err := keyedpool.New(&testfactory.Factory{}, tt.cfg)
			if !errors.Is(err, keyedpool.ErrInvalidConfig) || !strings.Contains(err.Error(), tt.field) {
				t.Errorf("New(%+v) = %v, want ErrInvalidConfig naming %s", tt.cfg, err, tt.field)
			}
		})
	}
	t.Run("NilFactory", func(t *testing.T) {
		_, err := keyedpool.New[string, int](nil, keyedpool.Config{})
		if !errors.Is(err, keyedpool.ErrInvalidConfig) || !strings.Contains(err.Error(), "factory") {
			t.Errorf("New(nil) = %v, want ErrInvalidConfig naming the factory", err)
		}
	})
	t.Run("NoLimits", func(t *testing.T) {
		// Negative per-key limits mean none: MinIdlePerKey may then be anything.
		if _, err := keyedpool.New(&testfactory.Factory{}, keyedpool.Config{MaxTotalPerKey: -1, MaxIdlePerKey: -1, MinIdlePerKey: 100}); err != nil {
			t.Errorf("New(no limits) = %v", err)
		}
	})
}

func TestSetConfig(t *testing.T) {
	t.Run("RefusesInvalidAndSharesChange", func(t *testing.T) {
		p, _ := newPool(t, keyedpool.Config{})
		if err := p.SetConfig(keyedpool.Config{MaxWait: -1}); !errors.Is(err, keyedpool.ErrInvalidConfig) {
			t.Errorf("SetConfig(invalid) = %v, want ErrInvalidConfig", err)
		}
		err := p.SetConfig(keyedpool.Config{MaxSharesPerObject: 4})
		if !errors.Is(err, keyedpool.ErrInvalidConfig) || !strings.Contains(err.Error(), "MaxSharesPerObject") {
			t.Errorf("SetConfig(MaxSharesPerObject changed) = %v, want ErrInvalidConfig naming it", err)
		}
		if got := p.Config(); got != keyedpool.DefaultConfig() {
			t.Errorf("Config() after refused SetConfig = %+v, want unchanged", got)
		}
	})
	t.Run("LoweringTrimsIdleNeverLent", func(t *testing.T) {
		p, f := newPool(t, keyedpool.Config{})
		var hs []*handle
		for range 6 {
			hs = append(hs, mustBorrow(t, p, "a"))
		}
		for _, h := range hs[:4] {
			mustReturn(t, p, h)
		}
		// 4 idle, 2 lent. MaxTotalPerKey 3 leaves room for 1 idle.
		if err := p.SetConfig(keyedpool.Config{MaxTotalPerKey: 3, MaxIdlePerKey: 2}); err != nil {
			t.Fatal(err)
		}
		if s := p.KeyStats("a"); s.Idle != 1 || s.Active != 2 || s.DestroyedSurplus != 3 {
			t.Errorf("KeyStats() = %+v, want 1 idle, 2 active, 3 surplus destroyed", s)
		}
		for _, h := range hs[4:] {
			if h.Value().Destroyed() {
				t.Error("SetConfig destroyed a lent object")
			}
		}
		// Lowering MaxTotal trims too.
		if err := p.SetConfig(keyedpool.Config{MaxTotal: 2}); err != nil {
			t.Fatal(err)
		}
		if got := f.LiveAll(); got != 2 {
			t.Errorf("objects alive = %d, want 2 (the lent ones)", got)
		}
	})
	t.Run("RaisingWakesWaiters", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			p, _ := newPool(t, keyedpool.Config{MaxTotalPerKey: 1})
			mustBorrow(t, p, "a")
			chs := []<-chan result{borrowAsync(context.Background(), p, "a"), borrowAsync(context.Background(), p, "a")}
			synctest.Wait()
			if err := p.SetConfig(keyedpool.Config{MaxTotalPerKey: 3}); err != nil {
				t.Fatal(err)
			}
			for _, ch := range chs {
				if r := <-ch; r.err != nil {
					t.Errorf("waiting Borrow() after raise = %v", r.err)
				}
			}
		})
	})
	t.Run("Closed", func(t *testing.T) {
		p, _ := newPool(t, keyedpool.Config{})
		p.Close(context.Background())
		if err := p.SetConfig(keyedpool.Config{}); !errors.Is(err, keyedpool.ErrClosed) {
			t.Errorf("SetConfig() on closed pool = %v, want ErrClosed", err)
		}
	})
}
