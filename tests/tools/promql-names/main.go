// promql-names parses PromQL expressions with Prometheus's own parser and prints the metric
// names each one selects, so the packaging tests can check every dashboard, rule and alert
// expression against instrument/lkrig_instrument/names.py without a regex approximation.
//
// Input (stdin): a JSON array of {"id": "...", "expr": "..."}.
// Output (stdout): a JSON array of {"id": "...", "names": [...], "error": "..."} in input order.
// Exit status: 0 when every expression parsed, 1 when any did not, 2 on bad input.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

type query struct {
	ID   string `json:"id"`
	Expr string `json:"expr"`
}

type result struct {
	ID    string   `json:"id"`
	Names []string `json:"names"`
	Error string   `json:"error,omitempty"`
}

func names(expr string) ([]string, error) {
	node, err := parser.ParseExpr(expr)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var bad error
	parser.Inspect(node, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		if vs.Name != "" {
			seen[vs.Name] = true
			return nil
		}
		// {__name__="x"} is a name too; a regex on __name__ cannot be checked against a list.
		for _, m := range vs.LabelMatchers {
			if m.Name != labels.MetricName {
				continue
			}
			if m.Type == labels.MatchEqual {
				seen[m.Value] = true
			} else if bad == nil {
				bad = fmt.Errorf("selector %s matches __name__ with %s: name it explicitly", vs, m.Type)
			}
		}
		return nil
	})
	if bad != nil {
		return nil, bad
	}
	out := make([]string, 0, len(seen))
	for k := range seen {
		out = append(out, k)
	}
	sort.Strings(out)
	return out, nil
}

func main() {
	var qs []query
	if err := json.NewDecoder(os.Stdin).Decode(&qs); err != nil {
		fmt.Fprintln(os.Stderr, "promql-names: stdin must be a JSON array of {\"id\", \"expr\"}:", err)
		os.Exit(2)
	}
	out := make([]result, 0, len(qs))
	status := 0
	for _, q := range qs {
		r := result{ID: q.ID, Names: []string{}}
		if ns, err := names(q.Expr); err != nil {
			r.Error = err.Error()
			status = 1
		} else {
			r.Names = ns
		}
		out = append(out, r)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", " ")
	if err := enc.Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "promql-names:", err)
		os.Exit(2)
	}
	os.Exit(status)
}
