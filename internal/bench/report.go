package bench

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
)

// WriteTable writes the report as an aligned table: each figure, Spool's median, the baseline's
// and their ratio.
func (r *Report) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "spool bench: %d CPUs, %s, %s; store %s; %d run(s) per cell (medians), %d jobs per cell, batch %d; %.0f s\n\n",
		r.Machine.CPUs, r.Machine.OS, r.Machine.GoVersion, r.Store, r.Runs, r.Jobs, r.Batch, r.Seconds)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tunit\tspool\tbaseline\tratio\tspool's runs\t")
	for _, row := range r.Rows {
		base, ratio := "-", "-"
		if row.Baseline != nil {
			base = num(*row.Baseline)
		}
		if row.Ratio != nil {
			ratio = strconv.FormatFloat(*row.Ratio, 'f', 2, 64)
		}
		runs := make([]string, len(row.Runs))
		for i, v := range row.Runs {
			runs[i] = num(v)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t\n", row.Name, row.Unit, num(row.Spool), base, ratio, strings.Join(runs, " "))
	}
	return tw.Flush()
}

// num prints a figure with about three significant digits.
func num(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}
