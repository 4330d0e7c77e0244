package boundary

// TraceHeader is the W3C trace-context header ("traceparent"). It crosses
// the boundary like any other header; the trusted runtime copies it from
// the message a handler handles onto the messages that handler sends,
// publishes and requests, so that a host-side trace continues through an
// enclave with no tracing library inside it. It is never sealed: the host
// reads it, by design.
const TraceHeader = "traceparent"
