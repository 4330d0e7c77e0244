package attest_test

import (
	"context"
	"crypto/ecdsa"
	"fmt"
	"os"

	"github.com/cloister-dev/cloister/attest"
)

// A simulated enclave issues evidence binding a nonce; a verifier that allows
// simulation checks it against a policy pinning the MRENCLAVE.
func ExampleVerifyWithPolicy() {
	// The program decides where the simulation root lives (a command
	// keeps it in the user's configuration directory); here, in memory.
	root, err := attest.NewEphemeralSimulationRoot()
	if err != nil {
		panic(err)
	}
	id := attest.SimIdentity{MREnclave: [32]byte{0xab}, ProductID: 1, SVN: 2}
	issuer := root.Issuer(id)
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
	trust := attest.VerifyOptions{SimPlatformKeys: []*ecdsa.PublicKey{root.PlatformPublicKey()}}
	policy := &attest.Policy{MREnclaves: [][32]byte{id.MREnclave}, ReportData: &nonce, AllowSimulation: true}
	claims, err := attest.VerifyWithPolicy(context.Background(), &got, trust, policy)
	fmt.Println(err, claims.Simulated(), claims.SVN)

	policy.AllowSimulation = false
	_, err = attest.VerifyWithPolicy(context.Background(), &got, trust, policy)
	fmt.Println(err)
	// Output:
	// <nil> true 2
	// attest: verification failed at step "simulation allowed": evidence is simulated and simulation is not allowed
}

// A program keeps its simulation root in a directory it chooses (the
// cloister command uses the user's configuration directory) and hands the
// root to what issues, seals and verifies; loading it again gives the same
// keys.
func ExampleLoadOrCreateSimulationRoot() {
	dir, err := os.MkdirTemp("", "simulation-root")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	root, err := attest.LoadOrCreateSimulationRoot(dir)
	if err != nil {
		panic(err)
	}
	again, err := attest.LoadOrCreateSimulationRoot(dir)
	if err != nil {
		panic(err)
	}
	fmt.Println(again.PlatformPublicKey().Equal(root.PlatformPublicKey()), len(root.SealSecret()))
	// Output:
	// true 32
}
