package main

import "github.com/spf13/cobra"

// cliCommands are the operator commands (list, switchover, …), defined in internal/cli.
func cliCommands() []*cobra.Command { return nil }
