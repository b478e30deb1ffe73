package rangesplit

import (
	"errors"

	"github.com/prometheus/prometheus/promql/parser"
)

// errNotSplittable stops the walk of an expression that may not be split.
var errNotSplittable = errors.New("not splittable")

// splittable reports whether every step of query qs evaluates the same whatever the
// range query's start and end: no @ start() or @ end(), no start(), end() or range()
// (as a function or in a duration expression), no info(). A query that does not
// parse is not splittable (the engine parsed it, so its parser has options ours lacks).
func (e *Engine) splittable(qs string) bool {
	expr, err := e.parser.ParseExpr(qs)
	if err != nil || expr == nil {
		return false
	}
	return Splittable(expr)
}

// Splittable reports whether the value of the parsed (not preprocessed) expression
// at a step of a range query is independent of the query's start and end, so that
// the range may be evaluated in parts.
func Splittable(expr parser.Expr) bool {
	err := parser.Walk(inspector(func(node parser.Node) error {
		switch n := node.(type) {
		case *parser.VectorSelector:
			if n.StartOrEnd != 0 || !durationSplittable(n.OriginalOffsetExpr) {
				return errNotSplittable
			}
		case *parser.MatrixSelector:
			if !durationSplittable(n.RangeExpr) {
				return errNotSplittable
			}
		case *parser.SubqueryExpr:
			if n.StartOrEnd != 0 || !durationSplittable(n.RangeExpr) || !durationSplittable(n.StepExpr) || !durationSplittable(n.OriginalOffsetExpr) {
				return errNotSplittable
			}
		case *parser.Call:
			switch n.Func.Name {
			case "start", "end", "range", "info":
				return errNotSplittable
			}
		case *parser.StepInvariantExpr:
			// Only the engine's preprocessing adds these; a parsed query has none.
			return errNotSplittable
		}
		return nil
	}), expr, nil)
	return err == nil
}

// durationSplittable reports whether a duration expression (nil: none) is the same
// for every part: numbers, step() and arithmetic, not range().
func durationSplittable(d *parser.DurationExpr) bool {
	return d == nil || durationOperandSplittable(d)
}

func durationOperandSplittable(expr parser.Expr) bool {
	switch n := expr.(type) {
	case nil:
		return true
	case *parser.NumberLiteral:
		return true
	case *parser.ParenExpr:
		return n != nil && durationOperandSplittable(n.Expr)
	case *parser.DurationExpr:
		if n == nil {
			return true
		}
		switch n.Op {
		case parser.STEP, parser.ADD, parser.SUB, parser.MUL, parser.DIV, parser.MOD, parser.POW, parser.MIN_OF, parser.MAX_OF:
			return durationOperandSplittable(n.LHS) && durationOperandSplittable(n.RHS)
		}
	}
	return false
}

// inspector is a parser.Visitor calling f on every node.
type inspector func(parser.Node) error

func (f inspector) Visit(node parser.Node, _ []parser.Node) (parser.Visitor, error) {
	if node == nil {
		return nil, nil
	}
	if err := f(node); err != nil {
		return nil, err
	}
	return f, nil
}
