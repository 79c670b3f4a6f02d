// Package bench compares amiproto's Reader with other Go AMI parsers on the
// same recorded Asterisk bytes. It is a separate module so that the
// libraries it measures against never enter the main module's go.mod.
//
// Everything lives in the _test.go files; see README.md for the command.
package bench
