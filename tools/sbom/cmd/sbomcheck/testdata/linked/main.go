// Command linked links one module beside the standard library, for
// sbomcheck's test.
package main

import (
	"fmt"

	"golang.org/x/mod/semver"
)

func main() { fmt.Println(semver.IsValid("v1.0.0")) }
