package attest

import (
	"bytes"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"
)

// verifyCollateral runs the collateral steps and fills the TCB fields of c.
func (st *dcapState) verifyCollateral(s *stepRunner, c *Claims) error {
	col := st.opts.Collateral
	var tcbSigners, qeSigners []*x509.Certificate
	if err := s.run(StepTCBInfoSignature, func() (err error) {
		tcbSigners, err = verifySignedJSON("TCB Info", col.TCBInfo, col.TCBInfoSignature, col.TCBInfoIssuerChain, st.root, st.at)
		return err
	}); err != nil {
		return err
	}
	if err := s.run(StepQEIdentitySig, func() (err error) {
		qeSigners, err = verifySignedJSON("QE Identity", col.QEIdentity, col.QEIdentitySignature, col.QEIdentityIssuerChain, st.root, st.at)
		return err
	}); err != nil {
		return err
	}
	var te *tcbEvalNumbersV1
	if col.TCBEvaluationNumbers == nil {
		s.skip(StepTCBEvalNumbers, "not in collateral")
	} else if err := s.run(StepTCBEvalNumbers, func() (err error) {
		if _, err = verifySignedJSON("TCB evaluation data numbers", col.TCBEvaluationNumbers, col.TCBEvaluationNumbersSignature, col.TCBInfoIssuerChain, st.root, st.at); err != nil {
			return err
		}
		te, err = parseTCBEvalNumbers(col.TCBEvaluationNumbers)
		return err
	}); err != nil {
		return err
	}
	var ti *tcbInfoV3
	var qi *qeIdentityV2
	if err := s.run(StepCollateralValidity, func() (err error) {
		if ti, err = parseTCBInfo(col.TCBInfo); err != nil {
			return err
		}
		if qi, err = parseQEIdentity(col.QEIdentity); err != nil {
			return err
		}
		return st.checkValidity(ti, qi, te)
	}); err != nil {
		return err
	}
	if te != nil {
		for _, n := range te.TCBEvalNumbers {
			c.LatestTCBEvaluationDataNumber = max(c.LatestTCBEvaluationDataNumber, n.TCBEvaluationDataNumber)
		}
	}
	if col.RootCACRL == nil {
		s.skip(StepRootCACRL, "collateral has no root CA CRL")
	} else if err := s.run(StepRootCACRL, func() error {
		crl := col.RootCACRL
		if err := crl.CheckSignatureFrom(st.root); err != nil {
			return fmt.Errorf("root CA CRL is not signed by the pinned root: %w", err)
		}
		checked := append([]*x509.Certificate{st.chain[1]}, tcbSigners[:len(tcbSigners)-1]...)
		checked = append(checked, qeSigners[:len(qeSigners)-1]...)
		for _, cert := range checked {
			if revoked(crl, cert.SerialNumber) {
				return fmt.Errorf("%q (serial %x) is revoked by the root CA CRL", cert.Subject.CommonName, cert.SerialNumber)
			}
		}
		return nil
	}); err != nil {
		return err
	}
	if err := s.run(StepPCKCRL, func() error {
		crl, err := st.pckCRL()
		if err != nil {
			return err
		}
		ca := st.chain[1]
		if err := crl.CheckSignatureFrom(ca); err != nil {
			return fmt.Errorf("PCK CRL is not signed by %q: %w", ca.Subject.CommonName, err)
		}
		if revoked(crl, st.chain[0].SerialNumber) {
			return fmt.Errorf("PCK certificate (serial %x) is revoked", st.chain[0].SerialNumber)
		}
		return nil
	}); err != nil {
		return err
	}
	if err := s.run(StepPCKExtensions, func() (err error) {
		st.ext, err = ParsePCKExtensions(st.chain[0])
		return err
	}); err != nil {
		return err
	}
	if err := s.run(StepTCBInfo, func() error {
		fmspc, err := hex.DecodeString(ti.FMSPC)
		if err != nil || !bytes.Equal(fmspc, st.ext.FMSPC[:]) {
			return fmt.Errorf("TCB Info is for FMSPC %s, the PCK certificate has %x", ti.FMSPC, st.ext.FMSPC)
		}
		pceid, err := hex.DecodeString(ti.PCEID)
		if err != nil || !bytes.Equal(pceid, st.ext.PCEID[:]) {
			return fmt.Errorf("TCB Info is for PCE ID %s, the PCK certificate has %x", ti.PCEID, st.ext.PCEID)
		}
		return nil
	}); err != nil {
		return err
	}
	var qeLevel *qeTCBLevelV2
	if err := s.run(StepQEIdentity, func() (err error) {
		qeLevel, err = matchQEIdentity(qi, &st.quote.QEReport)
		return err
	}); err != nil {
		return err
	}
	return s.run(StepTCBStatus, func() error {
		lvl, err := matchTCBLevel(ti, st.ext)
		if err != nil {
			return err
		}
		c.PlatformTCBStatus = lvl.TCBStatus
		c.QETCBStatus = qeLevel.TCBStatus
		c.QEAdvisoryIDs = append([]string(nil), qeLevel.AdvisoryIDs...)
		c.TCBStatus = convergeTCB(lvl.TCBStatus, qeLevel.TCBStatus)
		c.AdvisoryIDs = mergeAdvisories(lvl.AdvisoryIDs, qeLevel.AdvisoryIDs)
		if t, err := time.Parse(time.RFC3339, lvl.TCBDate); err == nil {
			c.TCBDate = t
		}
		c.TCBEvaluationDataNumber = ti.TCBEvaluationDataNumber
		c.QETCBEvaluationDataNumber = qi.TCBEvaluationDataNumber
		c.CollateralChecked = true
		return nil
	})
}

// checkValidity reports every collateral item that is not current at the
// evaluation time, naming it and its dates.
func (st *dcapState) checkValidity(ti *tcbInfoV3, qi *qeIdentityV2, te *tcbEvalNumbersV1) error {
	col := st.opts.Collateral
	var problems []string
	// Only expiry is checked. An item issued after the evaluation time
	// carries newer knowledge than that time (and is signed by Intel), so
	// evaluating older evidence with fresher collateral is allowed.
	check := func(what string, issued, next time.Time) {
		if next.Before(issued) {
			problems = append(problems, fmt.Sprintf("%s has its next update (%s) before its issue date (%s)", what, next.UTC().Format(time.RFC3339), issued.UTC().Format(time.RFC3339)))
		} else if st.at.After(next) {
			problems = append(problems, fmt.Sprintf("%s expired at %s", what, next.UTC().Format(time.RFC3339)))
		}
	}
	dates := []struct {
		what, issued, next string
	}{{"TCB Info", ti.IssueDate, ti.NextUpdate}, {"QE Identity", qi.IssueDate, qi.NextUpdate}}
	if te != nil {
		dates = append(dates, struct{ what, issued, next string }{"TCB evaluation data numbers", te.IssueDate, te.NextUpdate})
	}
	for _, d := range dates {
		issued, err := parseTime(d.what+" issueDate", d.issued)
		if err != nil {
			return err
		}
		next, err := parseTime(d.what+" nextUpdate", d.next)
		if err != nil {
			return err
		}
		check(d.what, issued, next)
	}
	if col.RootCACRL != nil {
		check("root CA CRL", col.RootCACRL.ThisUpdate, col.RootCACRL.NextUpdate)
	}
	if crl, err := st.pckCRL(); err == nil {
		check("PCK CRL", crl.ThisUpdate, crl.NextUpdate)
	}
	if len(problems) > 0 {
		return fmt.Errorf("collateral not current at evaluation time %s: %s", st.at.UTC().Format(time.RFC3339), strings.Join(problems, "; "))
	}
	return nil
}

// pckCRL picks the collateral's CRL issued by the quote's PCK CA.
func (st *dcapState) pckCRL() (*x509.RevocationList, error) {
	col := st.opts.Collateral
	if col.PCKCRL == nil {
		return nil, errors.New("collateral has no PCK CRL")
	}
	ca := st.chain[1]
	var issuers []string
	for _, crl := range append([]*x509.RevocationList{col.PCKCRL}, col.MorePCKCRLs...) {
		if crl == nil {
			continue
		}
		if bytes.Equal(crl.RawIssuer, ca.RawSubject) {
			return crl, nil
		}
		issuers = append(issuers, fmt.Sprintf("%q", crl.Issuer.CommonName))
	}
	return nil, fmt.Errorf("PCK CRL is issued by %s, but the PCK certificate by %q", strings.Join(issuers, ", "), ca.Subject.CommonName)
}

func revoked(crl *x509.RevocationList, serial *big.Int) bool {
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber != nil && e.SerialNumber.Cmp(serial) == 0 {
			return true
		}
	}
	return false
}

// matchQEIdentity checks the QE report against the QE Identity and returns
// the TCB level its ISVSVN reaches.
func matchQEIdentity(qi *qeIdentityV2, r *ReportBody) (*qeTCBLevelV2, error) {
	mrsigner, err := hex.DecodeString(qi.MRSigner)
	if err != nil || len(mrsigner) != 32 {
		return nil, fmt.Errorf("QE Identity mrsigner %q is not 32 bytes of hex", qi.MRSigner)
	}
	if !bytes.Equal(mrsigner, r.MRSigner[:]) {
		return nil, fmt.Errorf("QE MRSIGNER %x is not the QE Identity's %s", r.MRSigner, strings.ToLower(qi.MRSigner))
	}
	if int(r.ISVProdID) != qi.ISVProdID {
		return nil, fmt.Errorf("QE ISVPRODID %d is not the QE Identity's %d", r.ISVProdID, qi.ISVProdID)
	}
	misc, err1 := hex.DecodeString(qi.MiscSelect)
	miscMask, err2 := hex.DecodeString(qi.MiscSelectMask)
	if err1 != nil || err2 != nil || len(misc) != 4 || len(miscMask) != 4 {
		return nil, errors.New("QE Identity miscselect/miscselectMask are not 4 bytes of hex")
	}
	// The JSON gives MISCSELECT as a big-endian hex number.
	m, mm := binary.BigEndian.Uint32(misc), binary.BigEndian.Uint32(miscMask)
	if r.MiscSelect&mm != m&mm {
		return nil, fmt.Errorf("QE MISCSELECT %08x does not match %08x under mask %08x", r.MiscSelect, m, mm)
	}
	attr, err1 := hex.DecodeString(qi.Attributes)
	attrMask, err2 := hex.DecodeString(qi.AttributesMask)
	if err1 != nil || err2 != nil || len(attr) != 16 || len(attrMask) != 16 {
		return nil, errors.New("QE Identity attributes/attributesMask are not 16 bytes of hex")
	}
	for i := range 16 {
		if r.Attributes[i]&attrMask[i] != attr[i]&attrMask[i] {
			return nil, fmt.Errorf("QE attributes %x do not match %x under mask %x", r.Attributes, attr, attrMask)
		}
	}
	for i := range qi.TCBLevels {
		if int(r.ISVSVN) >= qi.TCBLevels[i].TCB.ISVSVN {
			return &qi.TCBLevels[i], nil
		}
	}
	// Below every level: Intel's QVL reports the QE as revoked.
	return &qeTCBLevelV2{TCBStatus: TCBRevoked}, nil
}

// matchTCBLevel returns the first TCB level whose component SVNs and PCESVN
// the PCK certificate's all reach.
func matchTCBLevel(ti *tcbInfoV3, ext *PCKExtensions) (*tcbLevelV3, error) {
	for i := range ti.TCBLevels {
		l := &ti.TCBLevels[i]
		ok := ext.PCESVN >= l.TCB.PCESVN
		for j := 0; ok && j < 16; j++ {
			ok = ext.CompSVNs[j] >= l.TCB.SGXTCBComponents[j].SVN
		}
		if ok {
			return l, nil
		}
	}
	return nil, fmt.Errorf("TCB not supported: the platform's TCB (components %v, PCESVN %d) is below every level of the TCB Info", ext.CompSVNs, ext.PCESVN)
}

// convergeTCB combines the platform and QE TCB statuses the way Intel's QVL
// does.
func convergeTCB(platform, qe TCBStatus) TCBStatus {
	switch qe {
	case TCBOutOfDate, TCBOutOfDateConfigurationNeeded:
		switch platform {
		case TCBUpToDate, TCBSWHardeningNeeded:
			return TCBOutOfDate
		case TCBConfigurationNeeded, TCBConfigurationAndSWHardeningNeeded:
			return TCBOutOfDateConfigurationNeeded
		}
	case TCBRevoked:
		return TCBRevoked
	}
	return platform
}

func mergeAdvisories(lists ...[]string) []string {
	var out []string
	seen := map[string]bool{}
	for _, l := range lists {
		for _, id := range l {
			if !seen[id] {
				seen[id] = true
				out = append(out, id)
			}
		}
	}
	return out
}
