// Package attest produces and checks attestation evidence: simulated quotes
// for machines without SGX, and Intel SGX DCAP (ECDSA, quote version 3)
// quotes verified in pure Go against the pinned Intel SGX Root CA.
//
// The package imports only the standard library: it is compiled into enclave
// images.
//
// # Evidence
//
// An [Evidence] is a type ([EvidenceSGXDCAP] or [EvidenceSimulated]) and the
// quote bytes. Its binary encoding (see [Evidence.MarshalBinary]) is
//
//	"CLEV" | version (1 byte, = 1) | type (1 byte: 1 simulated, 2 sgx-dcap) |
//	quote length (4 bytes, big endian) | quote
//
// and is decoded strictly: no trailing bytes, no unknown types, quotes of at
// most [MaxQuoteSize] bytes.
//
// # Verifying an SGX DCAP quote
//
// [Verify] runs these steps in order and stops at the first that fails,
// returning a [*VerificationError] that names it:
//
//  1. "parse": the quote is version 3, attestation key type 2 (ECDSA P-256),
//     TEE type SGX, QE vendor Intel; every length field is bounds-checked and
//     no byte is left over.
//  2. "pck chain": the certification data is type 5 (a PEM chain, with or
//     without a trailing NUL) ending with the root certificate, which must be
//     the pinned Intel SGX Root CA byte for byte (else a [*RootMismatchError]);
//     the PCK leaf chains to the pinned root and every certificate is valid
//     at the evaluation time.
//  3. "qe report signature": the QE report is signed by the PCK leaf key.
//  4. "qe report data": the QE report data is SHA-256(attestation key || QE
//     authentication data) followed by 32 zero bytes.
//  5. "quote signature": header || report body is signed by the attestation key.
//
// When collateral is given ([VerifyOptions.Collateral]) these follow:
//
//  6. "tcb info signature", "qe identity signature": the TCB Info (v3) and
//     QE Identity (v2) JSON values are signed (raw r||s ECDSA over the exact
//     bytes of the value) by the Intel SGX TCB Signing certificate, issued by
//     the pinned root and valid at the evaluation time (a root the issuer
//     chain carries must be the pinned one).
//     "tcb evaluation numbers" (optional, skipped when absent): the same for
//     the TCB evaluation data numbers; the highest is reported.
//  7. "collateral validity": no TCB Info, QE Identity or CRL has passed its
//     next update at the evaluation time; the error names every item that
//     expired and when. (Items issued after the evaluation time are accepted:
//     they are newer knowledge.)
//  8. "root ca crl", "pck crl": the CRLs are signed by the root and by the PCK
//     CA of the quote's chain and revoke none of the certificates used. A
//     collateral set without a root CA CRL skips that check (reported as
//     skipped).
//  9. "pck extensions": the SGX extension of the PCK certificate (OID
//     1.2.840.113741.1.13.1) gives FMSPC, PCE ID, the 16 TCB component SVNs and
//     the PCESVN.
//  10. "tcb info": the TCB Info is for the PCK's FMSPC and PCE ID.
//  11. "qe identity": the QE report's MRSIGNER, ISVPRODID, MISCSELECT and
//     attributes match the QE Identity; its ISVSVN selects the QE TCB status.
//  12. "tcb status": the first TCB level whose component SVNs and PCESVN are all
//     at most the PCK's gives the platform TCB status and advisory IDs; it is
//     converged with the QE TCB status as Intel's QVL does (an out-of-date QE
//     makes the platform out of date, a revoked QE makes it revoked).
//
// Claims carry the result; a [Policy] then decides whether they are
// acceptable (identity, debug, accepted TCB statuses, report data,
// simulation).
//
// # Simulated evidence
//
// A simulated quote is produced by [SimIssuer] and signed with a simulation
// platform key (ECDSA P-256), part of a [SimulationRoot] the caller hands
// in: the package never looks for keys on the machine by itself. It promises nothing
// against a malicious host: anyone with the key can forge one. Its layout
// (all integers big endian) is
//
//	offset  size  field
//	0       8     magic "CLSIMQ01"
//	8       32    MRENCLAVE
//	40      32    MRSIGNER
//	72      2     ISV product ID
//	74      2     ISV SVN
//	76      16    attributes (bit 1 of byte 0: debug)
//	92      64    report data
//	156     65    platform public key (uncompressed P-256 point)
//	221     64    signature r||s over SHA-256("cloister simulated quote v1\x00" || bytes 0..221)
//
// It is accepted only when both [VerifyOptions.AllowSimulation] and
// [Policy.AllowSimulation] are set and the platform key is among
// [VerifyOptions.SimPlatformKeys]; every
// human-readable result says "simulated".
package attest
