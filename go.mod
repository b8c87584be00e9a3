module github.com/kpool-go/kpool

go 1.25.0

require (
	github.com/jackc/puddle/v2 v2.2.3
	github.com/jolestar/go-commons-pool/v2 v2.1.2
	go.uber.org/goleak v1.3.0
)

require golang.org/x/sync v0.1.0 // indirect
