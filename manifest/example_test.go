package manifest_test

import (
	"fmt"

	"github.com/cloister-dev/cloister/manifest"
	"github.com/cloister-dev/cloister/manifest/manifestyaml"
)

// The host parses the owner's YAML and hands the coordinator the canonical
// form, the only one ParseCanonical takes.
func ExampleParseCanonical() {
	m, err := manifestyaml.Parse([]byte("version: 1\nservices:\n  analytics: {}\n"))
	if err != nil {
		panic(err)
	}
	c, err := manifest.ParseCanonical(m.Canonical())
	fmt.Println(err, c.Hash() == m.Hash())
	_, err = manifest.ParseCanonical([]byte("version: 1\nservices:\n  analytics: {}\n"))
	fmt.Println(err)
	// Output:
	// <nil> true
	// manifest (line 1): not valid JSON: invalid character 'v' looking for beginning of value
}
