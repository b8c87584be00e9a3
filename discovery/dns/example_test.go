package dns_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/kpool-go/kpool/discovery"
	"github.com/kpool-go/kpool/discovery/dns"
)

// printer prints each list it is given, then signals.
type printer chan struct{}

func (p printer) Update(eps []discovery.Endpoint) {
	for _, e := range eps {
		fmt.Println(e.Addr(), "weight", e.Weight)
	}
	p <- struct{}{}
}

func (p printer) Error(err error) { log.Print(err) }

// A Resolver over the SRV records of a Kubernetes-style name. A Router is
// given the Resolver as any other (discovery.RouterConfig.Resolver) and
// routes a service named "_grpc._tcp.users.prod.svc.cluster.local" to
// these endpoints; an address name with the port, such as
// "users.prod.svc.cluster.local:50051", serves the A and AAAA records of
// a headless service instead.
func ExampleResolver() {
	// A DNS server standing in for the cluster's.
	s, err := listenDNS()
	if err != nil {
		log.Fatal(err)
	}
	defer s.Stop()
	s.Set("_grpc._tcp.users.prod.svc.cluster.local",
		"SRV 0 50 50051 pod-a.users.prod.svc.cluster.local.",
		"SRV 0 50 50051 pod-b.users.prod.svc.cluster.local.")
	s.Set("pod-a.users.prod.svc.cluster.local", "A 10.1.0.7")
	s.Set("pod-b.users.prod.svc.cluster.local", "A 10.1.0.9")

	res, err := dns.New(dns.Config{
		Servers:  []string{s.Addr}, // empty: the nameservers of /etc/resolv.conf
		Interval: 5 * time.Second,
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := make(printer, 1)
	done := make(chan error, 1)
	go func() { done <- res.Watch(ctx, "_grpc._tcp.users.prod.svc.cluster.local", p) }()
	<-p
	cancel()
	<-done
	// Output:
	// 10.1.0.7:50051 weight 50
	// 10.1.0.9:50051 weight 50
}
