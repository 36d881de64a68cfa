// Command commissioner decides affiliate commissions with versioned CEL policies: it evaluates
// order events (from files or NATS JetStream), stores every decision with the policy version
// that made it, and checks, tests and replays policies.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
