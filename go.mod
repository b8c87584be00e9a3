module github.com/kpool-go/kpool

go 1.25.0
