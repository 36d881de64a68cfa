package store

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/engine/payout"
	"github.com/commissioner/commissioner/rules"
)

func runPayeeSuite(t *testing.T, b backend) {
	ctx := context.Background()
	now := time.Date(2025, 5, 2, 9, 0, 0, 0, time.UTC)
	ana := payout.Payee{Program: "shop", AffiliateID: "a", Party: payout.Party{Name: "Ana", IBAN: "DE89370400440532013000", BIC: "DEUTDEFF"}}
	bo := payout.Payee{Program: "shop", AffiliateID: "b", Party: payout.Party{Name: "Bo", Account: "000123456789", BIC: "BOFAUS3N"}}
	other := payout.Payee{Program: "other", AffiliateID: "a", Party: payout.Party{Name: "Ana Two", IBAN: "NL91ABNA0417164300"}}

	t.Run("payee details are set, replaced and read per program", func(t *testing.T) {
		s := openStore(t, b.fresh(t))
		if _, err := s.Payee(ctx, "shop", "a"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Payee before any is set: got %v, want ErrNotFound", err)
		}
		if err := s.SetPayees(ctx, []payout.Payee{bo, ana, other}, now); err != nil {
			t.Fatal(err)
		}
		moved := ana
		moved.Name, moved.IBAN, moved.BIC = "Ana Pérez", "GB82WEST12345698765432", ""
		if err := s.SetPayees(ctx, []payout.Payee{moved}, now.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Payee(ctx, "shop", "a"); err != nil || got != moved {
			t.Errorf("Payee(shop, a) after it was replaced = %+v, %v; want %+v", got, err, moved)
		}
		if got, err := s.Payee(ctx, "other", "a"); err != nil || got != other {
			t.Errorf("Payee(other, a) = %+v, %v; want %+v: payee details are per program", got, err, other)
		}
		all, err := s.Payees(ctx, "")
		if err != nil || len(all) != 3 || all[0] != other || all[1] != moved || all[2] != bo {
			t.Errorf("Payees(all) = %+v, %v; want other/a, shop/a, shop/b", all, err)
		}
		shop, err := s.Payees(ctx, "shop")
		if err != nil || len(shop) != 2 {
			t.Errorf("Payees(shop) = %+v, %v; want 2", shop, err)
		}
		// An affiliate given twice stores nothing.
		err = s.SetPayees(ctx, []payout.Payee{{Program: "shop", AffiliateID: "c", Party: bo.Party}, bo, bo}, now)
		if err == nil || !strings.Contains(err.Error(), "b of shop is given twice") {
			t.Errorf("SetPayees with a duplicate: got %v, want an error naming it", err)
		}
		if _, err := s.Payee(ctx, "shop", "c"); !errors.Is(err, ErrNotFound) {
			t.Errorf("after a refused SetPayees: Payee(shop, c) = %v, want ErrNotFound (none stored)", err)
		}
	})

	t.Run("a run records the payee details it paid to", func(t *testing.T) {
		s := openStore(t, b.fresh(t))
		eng := ledgerEngine(t, map[string]string{"shop/v1.yaml": ledgerPolicy(1, false)})
		decideAndSave(t, s, eng, []engine.Event{
			shopOrder{id: "o-1", affiliate: "a", status: "completed", currency: "USD", amount: 10000}.event("e1", 1),
			shopOrder{id: "o-2", affiliate: "b", status: "completed", currency: "USD", amount: 2000}.event("e2", 2),
			shopOrder{id: "o-3", affiliate: "c", status: "completed", currency: "USD", amount: 4000}.event("e3", 3),
		})
		if err := s.SetPayees(ctx, []payout.Payee{ana, bo}, now); err != nil {
			t.Fatal(err)
		}
		_, april, _ := engine.MonthBounds("2025-04")
		terms := func(string) (rules.Payout, bool) { return rules.Payout{Method: payout.MethodWireTransfer}, true }
		var held []engine.Statement
		run, sts, err := s.ClosePayouts(ctx, "shop", "2025-04", april, now, func(es []engine.LedgerEntry) ([]engine.Statement, error) {
			sts, err := engine.Statements(es, terms)
			if err == nil {
				held = payout.Hold(sts, func(program, aff string) bool { return aff != "c" })
			}
			return sts, err
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(sts) != 3 || len(held) != 1 || held[0].AffiliateID != "c" || run.Payouts != 2 {
			t.Fatalf("closing April: run %+v, statements %+v, held %+v; want a and b paid, c held", run, sts, held)
		}
		// The held statement's entry stays unpaid: May's statement pays it.
		_, may, _ := engine.MonthBounds("2025-05")
		if es, err := s.Payable(ctx, "shop", may); err != nil || len(es) != 1 || es[0].AffiliateID != "c" {
			t.Errorf("payable after April: %+v (%v), want c's entry, held", es, err)
		}
		// The payee details change after the run: the run still names those it paid to.
		moved := ana
		moved.IBAN = "GB82WEST12345698765432"
		if err := s.SetPayees(ctx, []payout.Payee{moved}, now.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		ps, err := s.RunPayments(ctx, run.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(ps) != 2 {
			t.Fatalf("RunPayments = %+v, want 2", ps)
		}
		for i, want := range []struct {
			aff, amount string
			payee       payout.Payee
		}{{"a", "7.50", ana}, {"b", "1.50", bo}} {
			p := ps[i]
			if p.AffiliateID != want.aff || p.Amount.Text('f') != want.amount || p.Currency != "USD" || p.Method != payout.MethodWireTransfer ||
				p.Entries != 1 || p.Program != "shop" || p.ID == 0 || p.Payee == nil || *p.Payee != want.payee {
				t.Errorf("payment %d = %+v (payee %+v); want %s %s USD to %+v", i, p, p.Payee, want.aff, want.amount, want.payee)
			}
		}
		if ps, err := s.RunPayments(ctx, run.ID+1000); err != nil || len(ps) != 0 {
			t.Errorf("RunPayments of no run = %+v, %v; want none", ps, err)
		}
	})
}

func TestSQLitePayees(t *testing.T) { runPayeeSuite(t, sqliteBackend()) }

func TestPostgresPayees(t *testing.T) {
	postgresAdmin(t)
	runPayeeSuite(t, postgresBackend())
}
