package worker

import (
	"testing"

	"github.com/prism-streaming/prism/internal/testutil"
)

func TestMain(m *testing.M) { testutil.QuietMain(m) }
