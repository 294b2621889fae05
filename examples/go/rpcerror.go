package main

import (
	"fmt"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"
)

// rpcError is a failed call's gRPC status with the google.rpc details ordermesh sends
// (in the grpc-status-details-bin trailer) decoded.
type rpcError struct {
	// Code is the status code's canonical name (INVALID_ARGUMENT), as every language spells it.
	Code            string           `json:"code"`
	Message         string           `json:"message"`
	FieldViolations []fieldViolation `json:"field_violations,omitempty"`
	// RetryDelaySeconds is google.rpc.RetryInfo's retry_delay; nil when there is none.
	RetryDelaySeconds *float64         `json:"retry_delay_seconds,omitempty"`
	QuotaViolations   []quotaViolation `json:"quota_violations,omitempty"`
	// DetailTypes names every detail the status carried, decoded or not.
	DetailTypes []string `json:"detail_types,omitempty"`
}

type fieldViolation struct {
	Field       string `json:"field"`
	Description string `json:"description"`
}

type quotaViolation struct {
	Subject     string `json:"subject"`
	Description string `json:"description"`
}

// decodeError turns the error of a call into an rpcError; an error that is no gRPC status
// (a dial or TLS failure before any call) becomes UNKNOWN with its text.
func decodeError(err error) rpcError {
	st := status.Convert(err)
	decoded := rpcError{Code: code.Code(st.Code()).String(), Message: st.Message()}
	for _, raw := range st.Proto().GetDetails() {
		decoded.DetailTypes = append(decoded.DetailTypes, string(raw.MessageName()))
	}
	for _, detail := range st.Details() {
		switch d := detail.(type) {
		case *errdetails.BadRequest:
			for _, v := range d.GetFieldViolations() {
				decoded.FieldViolations = append(decoded.FieldViolations,
					fieldViolation{Field: v.GetField(), Description: v.GetDescription()})
			}
		case *errdetails.RetryInfo:
			seconds := d.GetRetryDelay().AsDuration().Seconds()
			decoded.RetryDelaySeconds = &seconds
		case *errdetails.QuotaFailure:
			for _, v := range d.GetViolations() {
				decoded.QuotaViolations = append(decoded.QuotaViolations,
					quotaViolation{Subject: v.GetSubject(), Description: v.GetDescription()})
			}
		}
	}
	return decoded
}

// String is the error as one line for people: code, message and the decoded details.
func (e rpcError) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s", e.Code, e.Message)
	for _, v := range e.FieldViolations {
		fmt.Fprintf(&b, "; field %s: %s", v.Field, v.Description)
	}
	if e.RetryDelaySeconds != nil {
		fmt.Fprintf(&b, "; retry in %g s", *e.RetryDelaySeconds)
	}
	return b.String()
}
