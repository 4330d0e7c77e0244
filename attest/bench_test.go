package attest

import (
	"context"
	"crypto/ecdsa"
	"path/filepath"
	"testing"
)

func BenchmarkParseQuote(b *testing.B) {
	raw := readTestdata(b, "sgx/phala_sgx_quote.dat")
	for b.Loop() {
		if _, err := ParseQuote(raw); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyQuote(b *testing.B) {
	ev := dcap(readTestdata(b, "sgx/phala_sgx_quote.dat"))
	ctx := context.Background()
	for b.Loop() {
		if _, err := Verify(ctx, ev, VerifyOptions{At: phalaAt}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyQuoteWithCollateral(b *testing.B) {
	ev := dcap(readTestdata(b, "sgx/phala_sgx_quote.dat"))
	col := loadCollateral(b, "sgx/phala_sgx_quote_collateral.json")
	ctx := context.Background()
	for b.Loop() {
		c, err := Verify(ctx, ev, VerifyOptions{At: phalaAt, Collateral: col})
		if err != nil || c.TCBStatus != TCBConfigurationAndSWHardeningNeeded {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseCollateralBundle(b *testing.B) {
	raw := readTestdata(b, "sgx/phala_sgx_quote_collateral.json")
	for b.Loop() {
		if _, err := ParseCollateralBundle(raw); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifySimulated(b *testing.B) {
	key, err := LoadOrCreateSimPlatformKey(filepath.Join(b.TempDir(), "k.pem"))
	if err != nil {
		b.Fatal(err)
	}
	iss, _ := NewSimIssuer(testSimIdentity(), key)
	ev, err := iss.Issue(context.Background(), [64]byte{})
	if err != nil {
		b.Fatal(err)
	}
	opts := VerifyOptions{AllowSimulation: true, SimPlatformKeys: []*ecdsa.PublicKey{&key.PublicKey}}
	ctx := context.Background()
	for b.Loop() {
		if _, err := Verify(ctx, ev, opts); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkIssueSimulated(b *testing.B) {
	key, err := LoadOrCreateSimPlatformKey(filepath.Join(b.TempDir(), "k.pem"))
	if err != nil {
		b.Fatal(err)
	}
	iss, _ := NewSimIssuer(testSimIdentity(), key)
	ctx := context.Background()
	for b.Loop() {
		if _, err := iss.Issue(ctx, [64]byte{}); err != nil {
			b.Fatal(err)
		}
	}
}
