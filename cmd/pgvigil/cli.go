package main

import (
	"github.com/spf13/cobra"

	"github.com/pgvigil/pgvigil/internal/cli"
)

// cliCommands are the operator commands (list, switchover, …), defined in internal/cli.
func cliCommands() []*cobra.Command { return cli.Commands(cli.Default()) }
