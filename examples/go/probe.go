package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"

	"google.golang.org/grpc/metadata"

	authv1 "github.com/ordermesh/ordermesh/gen/go/ordermesh/auth/v1"
)

// probeResult is what -probe prints: how many CreateOrder calls were accepted before the
// first refusal, and that refusal decoded (nil when every call was accepted).
type probeResult struct {
	Accepted int       `json:"accepted"`
	Refusal  *rpcError `json:"refusal"`
}

// probe sends -repeat CreateOrder calls (each with its own idempotency key) as the caller
// -token or -email names, or with no token at all, and prints where they stopped.
func (c client) probe(ctx context.Context, o options) error {
	token := o.token
	if token == "" && o.email != "" {
		login, err := c.auth.Login(ctx, &authv1.LoginRequest{Email: o.email, Password: o.password})
		if err != nil {
			return failed("login", err)
		}
		token = login.GetAccessToken()
	}
	if token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	}
	var result probeResult
	for range o.repeat {
		keyed := metadata.AppendToOutgoingContext(ctx, "idempotency-key", "go-probe-"+rand.Text())
		if _, err := c.orders.CreateOrder(keyed, orderRequest(o.product, o.quantity)); err != nil {
			refusal := decodeError(err)
			result.Refusal = &refusal
			break
		}
		result.Accepted++
	}
	encoded, err := json.Marshal(result)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(c.out, string(encoded))
	return err
}
