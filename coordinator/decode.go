package coordinator

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cloister-dev/cloister/attest"
	"github.com/cloister-dev/cloister/manifest"
	"github.com/cloister-dev/cloister/provision"
	"github.com/cloister-dev/cloister/secure"
)

// The decoders below turn a request body (outside bytes) into checked
// values, or a refusal with provision.CodeBadRequest that names what is
// wrong. They run before any state is touched.

func badRequest(err error) *Error {
	return refuse(provision.CodeBadRequest, "%v", err)
}

func decodeAttest(body []byte) (*provision.AttestRequest, error) {
	var r provision.AttestRequest
	if err := provision.Decode(body, &r); err != nil {
		return nil, badRequest(err)
	}
	if err := provision.CheckNonce(r.Nonce); err != nil {
		return nil, badRequest(err)
	}
	return &r, nil
}

func decodeServiceKey(body []byte) (*provision.ServiceKeyRequest, error) {
	var r provision.ServiceKeyRequest
	if err := provision.Decode(body, &r); err != nil {
		return nil, badRequest(err)
	}
	if r.Service == "" || len(r.Service) > manifest.MaxNameLen {
		return nil, refuse(provision.CodeBadRequest, "service name of %d bytes: want 1 to %d", len(r.Service), manifest.MaxNameLen)
	}
	return &r, nil
}

// joinRequest is a decoded join: the request, its evidence and the
// joining key.
type joinRequest struct {
	provision.JoinRequest
	evidence *attest.Evidence
	key      *secure.PublicKey
}

func decodeJoin(body []byte) (*joinRequest, error) {
	var r joinRequest
	if err := provision.Decode(body, &r.JoinRequest); err != nil {
		return nil, badRequest(err)
	}
	if r.Service == "" || len(r.Service) > manifest.MaxNameLen {
		return nil, refuse(provision.CodeBadRequest, "join: service name of %d bytes: want 1 to %d", len(r.Service), manifest.MaxNameLen)
	}
	if err := provision.CheckNonce(r.Nonce); err != nil {
		return nil, badRequest(fmt.Errorf("join: %w", err))
	}
	var err error
	if r.key, err = secure.ParsePublicKey(r.PublicKey); err != nil {
		return nil, badRequest(fmt.Errorf("join: public key: %w", err))
	}
	r.evidence = new(attest.Evidence)
	if err := r.evidence.UnmarshalBinary(r.Evidence); err != nil {
		return nil, badRequest(fmt.Errorf("join: evidence: %w", err))
	}
	return &r, nil
}

// manifestError words a manifest's validation errors for a refusal.
func manifestError(err error) *Error {
	var lines []string
	for _, fe := range manifest.FieldErrors(err) {
		lines = append(lines, fe.Error())
	}
	if len(lines) == 0 {
		return refuse(provision.CodeBadRequest, "manifest: %v", err)
	}
	return refuse(provision.CodeBadRequest, "manifest invalid: %s", strings.Join(lines, "; "))
}

func decodeManifestSet(body []byte) (*manifest.Manifest, error) {
	var r provision.ManifestSet
	if err := provision.Decode(body, &r); err != nil {
		return nil, badRequest(err)
	}
	m, err := manifest.ParseCanonical(r.Manifest)
	if err != nil {
		return nil, manifestError(err)
	}
	return m, nil
}

func decodeManifestUpdate(body []byte) (*manifest.Manifest, []byte, error) {
	var r provision.ManifestUpdate
	if err := provision.Decode(body, &r); err != nil {
		return nil, nil, badRequest(err)
	}
	if len(r.Signature) == 0 {
		return nil, nil, refuse(provision.CodeUnauthorized, "update refused: it is not signed (updates need the owner's signature)")
	}
	m, err := manifest.ParseCanonical(r.Manifest)
	if err != nil {
		return nil, nil, manifestError(err)
	}
	return m, r.Signature, nil
}

func decodeManifestHistory(body []byte) ([32]byte, error) {
	var r provision.ManifestHistoryRequest
	if err := provision.Decode(body, &r); err != nil {
		return [32]byte{}, badRequest(err)
	}
	if err := provision.CheckHash(r.Pinned); err != nil {
		return [32]byte{}, badRequest(fmt.Errorf("manifest history: pinned %w", err))
	}
	return [32]byte(r.Pinned), nil
}

func decodeRotate(body []byte) (*provision.RotateRequest, time.Duration, error) {
	var r provision.RotateRequest
	if err := provision.Decode(body, &r); err != nil {
		return nil, 0, badRequest(err)
	}
	if len(r.Signature) == 0 {
		return nil, 0, refuse(provision.CodeUnauthorized, "rotation refused: it is not signed (rotations need the owner's signature)")
	}
	grace := DefaultGrace
	if r.Grace != "" {
		var err error
		if grace, err = time.ParseDuration(r.Grace); err != nil {
			return nil, 0, badRequest(fmt.Errorf("rotate: grace: %w", err))
		}
		if grace < 0 || grace > MaxGrace {
			return nil, 0, badRequest(errors.New("rotate: grace must be between 0 and " + MaxGrace.String()))
		}
	}
	return &r, grace, nil
}
