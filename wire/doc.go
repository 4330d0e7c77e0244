// Package wire is the vocabulary both sides of the trust line speak: the
// host (packages bus, cluster, node, enclave) and the enclave images
// (packages trusted, boundary, secure, provision), as well as the manifest
// that names addresses for both.
//
// It holds, once each:
//
//   - the address grammar: ValidateAddress and MaxAddressLen;
//   - the message kinds (Kind): how a message travels — send, publish,
//     request, reply — with one numbering used by the bus, the boundary
//     protocol's frames and the sealed envelopes of package secure;
//   - the failure kinds of a request (Failure), with the names that travel
//     in the Cloister-Failure header;
//   - the reserved header names (Header*) and the codec names (Codec*),
//     which handlers inside an image set and read without importing the bus.
//
// The package imports only the standard library's fmt and strconv, so that
// it adds a few dozen lines to an enclave image's trusted code. Its values
// are part of the wire formats: changing a number here changes the frames
// and envelopes, and needs a new protocol version.
package wire
