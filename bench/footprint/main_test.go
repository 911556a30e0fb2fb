package footprint

import (
	"os"
	"testing"

	"github.com/fleetagent/fleetagent/internal/testenv/leakcheck"
)

func TestMain(m *testing.M) { os.Exit(leakcheck.Main(m)) }
