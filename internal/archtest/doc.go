// Package archtest holds the test that keeps the package graph in the shape
// docs/architecture.md describes: imports point down the data flow only,
// and no package outgrows a quarter of the code.
package archtest
