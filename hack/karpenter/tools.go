//go:build tools

// Package tools pins the program built from this module so `go mod tidy` keeps it: Karpenter's
// controller with its kwok cloud provider (sigs.k8s.io/karpenter/kwok, a main package).
package tools

import (
	_ "sigs.k8s.io/karpenter/kwok"
)
