package keyedpool

// BackoffPeriod exposes the make backoff's period for its bounds test.
var BackoffPeriod = backoffPeriod
