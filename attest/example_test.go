package attest_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cloister-dev/cloister/attest"
)

// A simulated enclave issues evidence binding a nonce; a verifier that allows
// simulation checks it against a policy pinning the MRENCLAVE.
func ExampleVerifyWithPolicy() {
	dir, err := os.MkdirTemp("", "attest-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	keyPath := filepath.Join(dir, "sim-platform-key.pem")
	key, err := attest.LoadOrCreateSimPlatformKey(keyPath)
	if err != nil {
		panic(err)
	}
	id := attest.SimIdentity{MREnclave: [32]byte{0xab}, ProductID: 1, SVN: 2}
	issuer, err := attest.NewSimIssuer(id, key)
	if err != nil {
		panic(err)
	}
	nonce := [64]byte{1, 2, 3}
	ev, err := issuer.Issue(context.Background(), nonce)
	if err != nil {
		panic(err)
	}
	wire, _ := ev.MarshalBinary() // what travels over the bus

	var got attest.Evidence
	if err := got.UnmarshalBinary(wire); err != nil {
		panic(err)
	}
	policy := &attest.Policy{MREnclaves: [][32]byte{id.MREnclave}, ReportData: &nonce, AllowSimulation: true}
	claims, err := attest.VerifyWithPolicy(context.Background(), &got, attest.VerifyOptions{SimPlatformKeyPath: keyPath}, policy)
	fmt.Println(err, claims.Simulated(), claims.SVN)

	policy.AllowSimulation = false
	_, err = attest.VerifyWithPolicy(context.Background(), &got, attest.VerifyOptions{SimPlatformKeyPath: keyPath}, policy)
	fmt.Println(err)
	// Output:
	// <nil> true 2
	// attest: verification failed at step "simulation allowed": evidence is simulated and simulation is not allowed
}
