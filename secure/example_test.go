package secure_test

import (
	"fmt"

	"github.com/cloister-dev/cloister/secure"
	"github.com/cloister-dev/cloister/wire"
)

// Two enclaves share the key of a secured address (the coordinator gave it
// to both); one sends, the other opens.
func Example_envelope() {
	key, _ := secure.NewAddressKey("water.stats", 1)

	sender, _ := secure.NewSealer(key)
	env, _, _ := sender.Seal(wire.KindPublish, map[string]string{"sensor": "s-17"}, []byte("mean=3.2bar"))

	receiver, _ := secure.NewOpener("water.stats", secure.OpenerOptions{}, key)
	msg, err := receiver.Open(wire.KindPublish, env)
	fmt.Println(string(msg.Plaintext), msg.Headers["sensor"], err)

	_, err = receiver.Open(wire.KindPublish, env) // the host replays it
	fmt.Println(err != nil)
	// Output:
	// mean=3.2bar s-17 <nil>
	// true
}

// A request on a secured address and its reply, bound to each other.
func Example_requestReply() {
	key, _ := secure.NewAddressKey("water.archive.query", 1)
	client, _ := secure.NewSealer(key)
	service, _ := secure.NewSealer(key)
	clientOpener, _ := secure.NewOpener(key.Address, secure.OpenerOptions{}, key)
	serviceOpener, _ := secure.NewOpener(key.Address, secure.OpenerOptions{}, key)

	req, ref, _ := client.Seal(wire.KindRequest, nil, []byte("history s-17"))
	in, _ := serviceOpener.Open(wire.KindRequest, req)
	rep, _, _ := service.SealReply(in.Ref(), nil, []byte("42 readings"))
	out, err := clientOpener.OpenReply(ref, rep)
	fmt.Println(string(out.Plaintext), err)
	// Output: 42 readings <nil>
}

// A sensor outside the bus talks to the analytics enclave over HPKE.
func Example_clientChannel() {
	// In the enclave: a key pair, whose public half its evidence binds.
	serviceKey, _ := secure.NewServiceKey()
	published := serviceKey.PublicKeyBytes()

	// The client, after verifying the evidence and pinning the manifest hash.
	var manifestHash [32]byte
	info := secure.ChannelInfo("analytics", manifestHash)
	pub, _ := secure.ParsePublicKey(published)
	ch, request, _ := secure.SealRequest(pub, info, []byte(`{"pressure":3.1}`))

	// The service.
	req, _ := serviceKey.OpenRequest(info, request)
	reply, _ := req.SealReply([]byte("stored"))

	// The client again.
	answer, err := ch.OpenReply(reply)
	fmt.Println(string(req.Plaintext), string(answer), err, pub.Suite())
	// Output: {"pressure":3.1} stored <nil> MLKEM768-X25519
}
