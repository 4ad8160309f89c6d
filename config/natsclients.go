package config

import (
	"strings"

	"github.com/prism-streaming/prism/internal/yamlfile"
	"github.com/prism-streaming/prism/queue/bus"
)

// validateNATSClients checks nats.clients: only for the embedded server,
// which must listen where the clients can reach it.
func (c *Config) validateNATSClients(errs *yamlfile.FieldErrors) {
	if len(c.NATS.Clients) == 0 {
		return
	}
	if c.NATS.URL != "" {
		errs.Addf("nats.clients", "are users of the embedded server: with an external cluster (url), configure them there")
		return
	}
	if c.NATS.Listen == "" {
		errs.Addf("nats.clients", "need nats.listen: the embedded server's default address is a random loopback port")
	}
	names, tokens := map[string]bool{}, map[string]bool{}
	for i, cl := range c.NATS.Clients {
		p := yamlfile.Index("nats.clients", i)
		switch {
		case cl.Name == "" || strings.ContainsAny(cl.Name, ".*> \t\r\n"):
			errs.Addf(p+".name", "%q: one NATS subject token is required (no dots, wildcards or spaces)", cl.Name)
		case names[cl.Name]:
			errs.Addf(p+".name", "%q is named twice", cl.Name)
		}
		switch {
		case len(cl.Token) < bus.MinClientToken:
			errs.Addf(p+".token", "at least %d characters", bus.MinClientToken)
		case tokens[cl.Token]:
			errs.Addf(p+".token", "the same as another client's")
		}
		names[cl.Name], tokens[cl.Token] = true, true
		for j, s := range cl.Publish {
			if err := bus.ValidSubject(s); err != nil {
				errs.Addf(yamlfile.Index(p+".publish", j), "%v", err)
			}
		}
		for j, s := range cl.Subscribe {
			if err := bus.ValidSubject(s); err != nil {
				errs.Addf(yamlfile.Index(p+".subscribe", j), "%v", err)
			}
		}
	}
}
