package main

import (
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgvigil/pgvigil/internal/certs"
)

func certsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "certs", Short: "A CA and certificates for TLS between members, etcd and clients"}
	var dir string
	var force bool
	init := &cobra.Command{
		Use:   "init --dir DIR",
		Short: "Create a CA (ECDSA P-256, 10 years) as DIR/ca.crt and DIR/ca.key (mode 0600)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ca, err := certs.NewCA("pgvigil CA", 10*365*24*time.Hour)
			if err != nil {
				return err
			}
			if err := ca.Save(dir, force); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "CA written to %s/%s (key %s, mode 0600)\n", dir, certs.CACertFile, certs.CAKeyFile)
			return nil
		},
	}
	var name, usage string
	var ips, dnsNames []string
	var days int
	issue := &cobra.Command{
		Use:   "issue --dir DIR --name NAME (--ip IP | --dns NAME)… [--usage server,client]",
		Short: "Sign a certificate with the CA in DIR as DIR/NAME.crt and DIR/NAME.key",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if name == "" {
				return fmt.Errorf("--name: required")
			}
			var hosts []string
			for _, ip := range ips {
				if net.ParseIP(ip) == nil {
					return fmt.Errorf("--ip: %q is not an IP address", ip)
				}
				hosts = append(hosts, ip)
			}
			hosts = append(hosts, dnsNames...)
			var u certs.Usage
			for _, x := range strings.Split(usage, ",") {
				switch strings.TrimSpace(x) {
				case "server":
					u.Server = true
				case "client":
					u.Client = true
				default:
					return fmt.Errorf("--usage: %q is not server or client", x)
				}
			}
			if days < 1 {
				return fmt.Errorf("--days: must be at least 1")
			}
			ca, err := certs.LoadCA(dir)
			if err != nil {
				return err
			}
			cert, key, err := ca.IssueFor(name, hosts, u, time.Duration(days)*24*time.Hour)
			if err != nil {
				return err
			}
			cf, kf, err := certs.WriteIssued(dir, name, cert, key, force)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "certificate %s and key %s (mode 0600) for %s\n", cf, kf, strings.Join(hosts, ", "))
			return nil
		},
	}
	show := &cobra.Command{
		Use:   "show FILE",
		Short: "Print a certificate's subject, SANs, usage, validity and issuer",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := certs.Describe(args[0])
			if err != nil {
				return err
			}
			fmt.Fprint(cmd.OutOrStdout(), s)
			return nil
		},
	}
	for _, c := range []*cobra.Command{init, issue} {
		c.Flags().StringVar(&dir, "dir", ".", "directory of the CA and the certificates")
		c.Flags().BoolVar(&force, "force", false, "replace existing files")
	}
	issue.Flags().StringVar(&name, "name", "", "certificate name (file name and common name)")
	issue.Flags().StringSliceVar(&ips, "ip", nil, "IP address SAN (repeatable)")
	issue.Flags().StringSliceVar(&dnsNames, "dns", nil, "DNS name SAN (repeatable)")
	issue.Flags().StringVar(&usage, "usage", "server,client", "server, client or both")
	issue.Flags().IntVar(&days, "days", 825, "validity in days")
	cmd.AddCommand(init, issue, show)
	return cmd
}
