module github.com/kpool-go/kpool

go 1.25.0

require github.com/jolestar/go-commons-pool/v2 v2.1.2

require go.uber.org/goleak v1.3.0 // indirect
