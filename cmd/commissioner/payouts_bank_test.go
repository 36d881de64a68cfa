package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/apd/v3"

	"github.com/commissioner/commissioner/adapters/store"
	"github.com/commissioner/commissioner/engine/payout"
)

func setPayees(t *testing.T, st *store.Store, payees ...payout.Payee) {
	t.Helper()
	for i, p := range payees {
		n, err := p.Normalize()
		if err != nil {
			t.Fatalf("payee %+v: %v", p, err)
		}
		payees[i] = n
	}
	if err := st.SetPayees(context.Background(), payees, time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
}

// painFile is what a bank reads first of a pain.001.001.09 file.
type painFile struct {
	XMLName xml.Name `xml:"urn:iso:std:iso:20022:tech:xsd:pain.001.001.09 Document"`
	MsgID   string   `xml:"CstmrCdtTrfInitn>GrpHdr>MsgId"`
	CreDtTm string   `xml:"CstmrCdtTrfInitn>GrpHdr>CreDtTm"`
	NbOfTxs string   `xml:"CstmrCdtTrfInitn>GrpHdr>NbOfTxs"`
	CtrlSum string   `xml:"CstmrCdtTrfInitn>GrpHdr>CtrlSum"`
	PmtInf  []struct {
		ReqdExctnDt string `xml:"ReqdExctnDt>Dt"`
		DbtrIBAN    string `xml:"DbtrAcct>Id>IBAN"`
		Txs         []struct {
			Amt struct {
				Ccy   string `xml:"Ccy,attr"`
				Value string `xml:",chardata"`
			} `xml:"Amt>InstdAmt"`
			Name    string `xml:"Cdtr>Nm"`
			IBAN    string `xml:"CdtrAcct>Id>IBAN"`
			Account string `xml:"CdtrAcct>Id>Othr>Id"`
			BIC     string `xml:"CdtrAgt>FinInstnId>BICFI"`
			Ustrd   string `xml:"RmtInf>Ustrd"`
		} `xml:"CdtTrfTxInf"`
	} `xml:"CstmrCdtTrfInitn>PmtInf"`
}

func readPain(t *testing.T, path string) (painFile, []byte) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("the bank file: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: mode %v, want 0600", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f painFile
	if err := xml.Unmarshal(b, &f); err != nil {
		t.Fatalf("%s: %v\n%s", path, err, b)
	}
	return f, b
}

// TestPipelineBankFile: closing a month with --export pays the statements of affiliates with
// payee details, holds the others, and writes one pain.001 file per currency whose group header
// and credit transfers are exactly the statements paid; the held statement is paid the next
// month once its details are set; a reprint gives the same bytes; no output shows an account in
// full.
func TestPipelineBankFile(t *testing.T) {
	cfg := pipelineConfig(t)
	cfg.Payouts.Debtor = DebtorConfig{Name: "Alibaba Affiliates Ltd", IBAN: "GB29 NWBK 6016 1331 9268 19", BIC: "NWBKGB2L"}
	svc := startRunning(t, cfg)

	ana := payout.Payee{Program: "alibaba", AffiliateID: "aff-bk1", Party: payout.Party{Name: "Ana Pérez & Co", IBAN: "DE89 3704 0044 0532 0130 00", BIC: "DEUTDEFF"}}
	bo := payout.Payee{Program: "alibaba", AffiliateID: "aff-bk2", Party: payout.Party{Name: "Bo Li", Account: "000123456789", BIC: "BOFAUS3N"}}
	setPayees(t, svc.store, ana, bo)
	secrets := []string{"DE89370400440532013000", "000123456789", "GB29NWBK60161331926819", "GB29 NWBK 6016 1331 9268 19"}

	// Completed 2026-09-12, held 30 days: approved 2026-10-12, paid with October.
	order := func(id, aff, amount string) lifecycleOrder {
		return lifecycleOrder{id: id, affiliate: aff, status: "completed", placed: "2026-09-10T12:00:00Z", completed: "2026-09-12T12:00:00Z", amount: amount}
	}
	jpy := bytes.Replace(order("bk-4", "aff-bk1", "12345").line(), []byte(`"currency":"USD"`), []byte(`"currency":"JPY"`), 1)
	publishDecided(t, svc, order("bk-1", "aff-bk1", "1000.00").line(), order("bk-2", "aff-bk1", "250.55").line(),
		order("bk-3", "aff-bk2", "99.99").line(), jpy, order("bk-5", "aff-bk3", "400.00").line())

	dir := filepath.Join(t.TempDir(), "bank")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	closedAt := time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC) // a Monday
	p := payoutsParams{Month: "2026-10", Close: true, Program: "alibaba", Format: "json", Export: filepath.Join(dir, "2026-10.xml"),
		Now: func() time.Time { return closedAt }}
	if err := runPayouts(context.Background(), svc.cfg, p, &out, &errOut); err != nil {
		t.Fatalf("closing October with --export: %v\n%s", err, errOut.String())
	}
	rep := payoutsJSON(t, svc.cfg, payoutsParams{Month: "2026-10", Program: "alibaba"}) // the reprint: what the run paid
	if len(rep.Runs) != 1 || !rep.Runs[0].ClosedBefore || rep.Runs[0].Payouts != 3 {
		t.Fatalf("October's run: got %+v, want closed with 3 payouts (aff-bk1 USD and JPY, aff-bk2 USD)", rep.Runs)
	}
	// aff-bk3 has no payee details: held, still payable after the close.
	if len(rep.Statements) != 1 || rep.Statements[0].AffiliateID != "aff-bk3" || !rep.Statements[0].Held || rep.Statements[0].Payable {
		t.Fatalf("left unpaid after October: got %+v, want aff-bk3's statement, held", rep.Statements)
	}
	if !strings.Contains(errOut.String(), "held 1 statement(s) of affiliates without payee details") {
		t.Errorf("standard error: got %q, want the held statement reported", errOut.String())
	}

	// The statements paid, per currency, from the close's own report.
	var closed struct {
		Runs []struct {
			RunID int64 `json:"run_id"`
		} `json:"runs"`
		Statements []struct {
			AffiliateID string `json:"affiliate_id"`
			Currency    string `json:"currency"`
			Total       string `json:"total"`
			Payable     bool   `json:"payable"`
			Held        bool   `json:"held"`
		} `json:"statements"`
		BankFiles []struct {
			Path     string `json:"path"`
			Currency string `json:"currency"`
		} `json:"bank_files"`
	}
	if err := json.Unmarshal(out.Bytes(), &closed); err != nil {
		t.Fatal(err)
	}
	payees := map[string]payout.Payee{}
	for _, pe := range []payout.Payee{ana, bo} {
		n, _ := pe.Normalize()
		payees[pe.AffiliateID] = n
	}
	paid := map[string]map[string]apd.Decimal{} // currency → affiliate → total
	for _, s := range closed.Statements {
		if s.Held != (s.AffiliateID == "aff-bk3") || s.Payable == s.Held {
			t.Errorf("statement %s %s: payable %t held %t; want only aff-bk3 held", s.AffiliateID, s.Currency, s.Payable, s.Held)
		}
		if !s.Payable {
			continue
		}
		if paid[s.Currency] == nil {
			paid[s.Currency] = map[string]apd.Decimal{}
		}
		d, _, _ := apd.NewFromString(s.Total)
		paid[s.Currency][s.AffiliateID] = *d
	}
	if len(closed.Runs) != 1 || len(closed.BankFiles) != 2 || len(paid) != 2 {
		t.Fatalf("got runs %+v, bank files %+v, paid %v; want one run and a JPY and a USD file", closed.Runs, closed.BankFiles, paid)
	}
	for _, bf := range closed.BankFiles {
		if want := filepath.Join(dir, "2026-10-alibaba-"+bf.Currency+".xml"); bf.Path != want {
			t.Errorf("bank file %s, want %s", bf.Path, want)
		}
		f, raw := readPain(t, bf.Path)
		want := paid[bf.Currency]
		var sum apd.Decimal
		for _, d := range want {
			apd.BaseContext.Add(&sum, &sum, &d)
		}
		if wantID := fmt.Sprintf("COMM-%d-202610-%s", closed.Runs[0].RunID, bf.Currency); f.MsgID != wantID {
			t.Errorf("%s: MsgId %q, want %q", bf.Currency, f.MsgID, wantID)
		}
		if f.CreDtTm != "2026-11-02T09:00:00Z" {
			t.Errorf("%s: CreDtTm %q, want the run's closing time", bf.Currency, f.CreDtTm)
		}
		ctrl, _, err := apd.NewFromString(f.CtrlSum)
		if f.NbOfTxs != fmt.Sprint(len(want)) || err != nil || ctrl.Cmp(&sum) != 0 {
			t.Errorf("%s: NbOfTxs %s, CtrlSum %s; want the %d statements paid, %s", bf.Currency, f.NbOfTxs, f.CtrlSum, len(want), sum.Text('f'))
		}
		if len(f.PmtInf) != 1 || f.PmtInf[0].ReqdExctnDt != "2026-11-02" || f.PmtInf[0].DbtrIBAN != "GB29NWBK60161331926819" {
			t.Fatalf("%s: payment information %+v, want one, executed 2026-11-02, from the configured IBAN", bf.Currency, f.PmtInf)
		}
		if len(f.PmtInf[0].Txs) != len(want) {
			t.Errorf("%s: %d credit transfers, want %d", bf.Currency, len(f.PmtInf[0].Txs), len(want))
		}
		for _, tx := range f.PmtInf[0].Txs {
			aff := ""
			for a := range want {
				if strings.Contains(tx.Ustrd, "affiliate "+a+",") {
					aff = a
				}
			}
			total, ok := want[aff]
			pe := payees[aff]
			amt, _, err := apd.NewFromString(tx.Amt.Value)
			if !ok || err != nil || amt.Cmp(&total) != 0 || tx.Amt.Ccy != bf.Currency {
				t.Errorf("%s: credit transfer %+v: want one per statement paid, with its total (%v)", bf.Currency, tx, want)
				continue
			}
			if tx.Name != pe.Name || tx.IBAN != pe.IBAN || tx.Account != pe.Account || tx.BIC != pe.BIC {
				t.Errorf("%s: %s: creditor %q %q %q %q, want %q %q %q %q", bf.Currency, aff, tx.Name, tx.IBAN, tx.Account, tx.BIC, pe.Name, pe.IBAN, pe.Account, pe.BIC)
			}
			delete(want, aff)
		}
		if bytes.Contains(raw, []byte("aff-bk3")) {
			t.Errorf("%s: the held affiliate is in the bank file", bf.Currency)
		}
	}

	// A reprint writes the same bytes.
	before, _ := os.ReadFile(filepath.Join(dir, "2026-10-alibaba-USD.xml"))
	var out2, err2 bytes.Buffer
	p2 := payoutsParams{Month: "2026-10", Program: "alibaba", Format: "table", Export: filepath.Join(dir, "again.xml")}
	if err := runPayouts(context.Background(), svc.cfg, p2, &out2, &err2); err != nil {
		t.Fatalf("reprinting October's bank file: %v", err)
	}
	if again, _ := os.ReadFile(filepath.Join(dir, "again-alibaba-USD.xml")); !bytes.Equal(again, before) || len(before) == 0 {
		t.Errorf("the reprinted USD file differs from the one written at the close")
	}
	for _, o := range []string{out.String(), errOut.String(), out2.String(), err2.String()} {
		for _, secret := range secrets {
			if strings.Contains(o, secret) {
				t.Errorf("an output shows the account %s in full:\n%s", secret, o)
			}
		}
	}
	if !strings.Contains(out2.String(), "held: 1 statement(s) of affiliates without payee details") || !strings.Contains(out2.String(), "alibaba aff-bk3 USD 40.00") {
		t.Errorf("the table lists no held statement:\n%s", out2.String())
	}

	// Its details set, aff-bk3's held statement is paid with November.
	setPayees(t, svc.store, payout.Payee{Program: "alibaba", AffiliateID: "aff-bk3", Party: payout.Party{Name: "Cy", IBAN: "NL91ABNA0417164300"}})
	nov := payoutsParams{Month: "2026-11", Close: true, Program: "alibaba", Format: "json", Export: filepath.Join(dir, "2026-11.xml"),
		Now: func() time.Time { return closedAt.AddDate(0, 1, 0) }}
	out.Reset()
	if err := runPayouts(context.Background(), svc.cfg, nov, &out, &errOut); err != nil {
		t.Fatalf("closing November: %v", err)
	}
	f, _ := readPain(t, filepath.Join(dir, "2026-11-alibaba-USD.xml"))
	if len(f.PmtInf) != 1 || len(f.PmtInf[0].Txs) != 1 || f.PmtInf[0].Txs[0].IBAN != "NL91ABNA0417164300" || f.PmtInf[0].Txs[0].Amt.Value != "40.00" ||
		f.PmtInf[0].ReqdExctnDt != "2026-12-02" {
		t.Errorf("November's USD file: got %+v, want aff-bk3's 40.00 to NL91…, executed 2026-12-02", f.PmtInf)
	}
}
