package payout

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/apd/v3"
)

// The bank's view of a pain.001.001.09 file: declared here apart from the package's own types, so
// that a wrong tag or a wrong nesting there makes these checks fail.
type bankDoc struct {
	XMLName xml.Name `xml:"urn:iso:std:iso:20022:tech:xsd:pain.001.001.09 Document"`
	GrpHdr  struct {
		MsgID    string `xml:"MsgId"`
		CreDtTm  string `xml:"CreDtTm"`
		NbOfTxs  string `xml:"NbOfTxs"`
		CtrlSum  string `xml:"CtrlSum"`
		InitgPty string `xml:"InitgPty>Nm"`
	} `xml:"CstmrCdtTrfInitn>GrpHdr"`
	PmtInf []struct {
		PmtInfID    string `xml:"PmtInfId"`
		PmtMtd      string `xml:"PmtMtd"`
		NbOfTxs     string `xml:"NbOfTxs"`
		CtrlSum     string `xml:"CtrlSum"`
		ReqdExctnDt string `xml:"ReqdExctnDt>Dt"`
		Dbtr        string `xml:"Dbtr>Nm"`
		DbtrIBAN    string `xml:"DbtrAcct>Id>IBAN"`
		DbtrBIC     string `xml:"DbtrAgt>FinInstnId>BICFI"`
		Txs         []struct {
			EndToEndID string `xml:"PmtId>EndToEndId"`
			Amount     struct {
				Ccy   string `xml:"Ccy,attr"`
				Value string `xml:",chardata"`
			} `xml:"Amt>InstdAmt"`
			BIC   string `xml:"CdtrAgt>FinInstnId>BICFI"`
			Name  string `xml:"Cdtr>Nm"`
			IBAN  string `xml:"CdtrAcct>Id>IBAN"`
			Other string `xml:"CdtrAcct>Id>Othr>Id"`
			Ustrd string `xml:"RmtInf>Ustrd"`
		} `xml:"CdtTrfTxInf"`
	} `xml:"CstmrCdtTrfInitn>PmtInf"`
}

func dec(t *testing.T, s string) apd.Decimal {
	t.Helper()
	d, _, err := apd.NewFromString(s)
	if err != nil {
		t.Fatal(err)
	}
	return *d
}

func payee(aff, name, iban, account, bic string) *Payee {
	return &Payee{Program: "alibaba", AffiliateID: aff, Party: Party{Name: name, IBAN: iban, Account: account, BIC: bic}}
}

var testDebtor = Party{Name: "Alibaba Affiliates Ltd", IBAN: "GB82WEST12345698765432", BIC: "NWBKGB2L"}

// TestFilesParseBack builds a run's bank files and reads them back as a bank would first: the
// message identification, the group header's count and control sum against the payments, one
// credit transfer per payment with its amount, currency, creditor, account and BIC, and the
// requested execution date.
func TestFilesParseBack(t *testing.T) {
	run := Run{ID: 7, Program: "alibaba", Month: "2025-11", ClosedAt: time.Date(2025, 12, 6, 9, 30, 15, 123456000, time.UTC)} // a Saturday
	payments := []Payment{
		{ID: 101, Program: "alibaba", AffiliateID: "aff-0003", Currency: "USD", Method: MethodWireTransfer, Amount: dec(t, "120.50"), Entries: 3,
			Payee: payee("aff-0003", "Ana & Co <GmbH>", "DE89370400440532013000", "", "DEUTDEFF")},
		{ID: 102, Program: "alibaba", AffiliateID: "aff-0001", Currency: "USD", Method: MethodWireTransfer, Amount: dec(t, "0.01"), Entries: 1,
			Payee: payee("aff-0001", "Bo Li", "NL91ABNA0417164300", "", "")},
		{ID: 103, Program: "alibaba", AffiliateID: "aff-0002", Currency: "USD", Method: MethodWireTransfer, Amount: dec(t, "9999999.99"), Entries: 40,
			Payee: payee("aff-0002", "Carla Díaz", "", "000123456789", "BOFAUS3N")},
		{ID: 104, Program: "alibaba", AffiliateID: "aff-0002", Currency: "JPY", Method: MethodWireTransfer, Amount: dec(t, "15300"), Entries: 2,
			Payee: payee("aff-0002", "Carla Díaz", "", "1234567", "MUFGJPJT")},
		{ID: 105, Program: "alibaba", AffiliateID: "aff-0009", Currency: "USD", Method: "paypal", Amount: dec(t, "5.00"), Entries: 1},
	}
	exec := ExecutionDate(run.ClosedAt)
	if got := exec.Format(time.DateOnly); got != "2025-12-08" {
		t.Fatalf("ExecutionDate(Saturday 2025-12-06) = %s, want Monday 2025-12-08", got)
	}
	files, others, err := Files(run, payments, testDebtor, exec)
	if err != nil {
		t.Fatal(err)
	}
	if len(others) != 1 || others[0].ID != 105 {
		t.Errorf("payments by another method: got %+v, want payout 105 (paypal) alone", others)
	}
	if len(files) != 2 || files[0].Currency != "JPY" || files[1].Currency != "USD" {
		t.Fatalf("got %d files (%v), want JPY then USD", len(files), files)
	}
	// What the run paid by wire, per currency and end-to-end id: what each file must hold.
	want := map[string]map[string]Payment{}
	for _, p := range payments {
		if p.Method != MethodWireTransfer {
			continue
		}
		if want[p.Currency] == nil {
			want[p.Currency] = map[string]Payment{}
		}
		want[p.Currency][fmt.Sprintf("COMM-202511-P%d", p.ID)] = p
	}
	for _, f := range files {
		var doc bankDoc
		if err := xml.Unmarshal(f.XML, &doc); err != nil {
			t.Fatalf("%s: parsing the file back: %v\n%s", f.Currency, err, f.XML)
		}
		if !bytes.HasPrefix(f.XML, []byte(`<?xml version="1.0" encoding="UTF-8"?>`)) {
			t.Errorf("%s: the file does not start with the XML declaration", f.Currency)
		}
		wantPaid := want[f.Currency]
		var sum apd.Decimal
		for _, p := range wantPaid {
			if _, err := apd.BaseContext.Add(&sum, &sum, &p.Amount); err != nil {
				t.Fatal(err)
			}
		}
		g := doc.GrpHdr
		if wantID := "COMM-7-202511-" + f.Currency; g.MsgID != wantID || f.MsgID != wantID || len(g.MsgID) > 35 {
			t.Errorf("%s: MsgId %q (File.MsgID %q), want %q (at most 35 characters)", f.Currency, g.MsgID, f.MsgID, wantID)
		}
		if g.CreDtTm != "2025-12-06T09:30:15Z" {
			t.Errorf("%s: CreDtTm %q, want the run's closing time 2025-12-06T09:30:15Z", f.Currency, g.CreDtTm)
		}
		if g.NbOfTxs != fmt.Sprint(len(wantPaid)) || f.Transfers != len(wantPaid) {
			t.Errorf("%s: GrpHdr NbOfTxs %s (File.Transfers %d), want %d", f.Currency, g.NbOfTxs, f.Transfers, len(wantPaid))
		}
		if ctrl := dec(t, g.CtrlSum); ctrl.Cmp(&sum) != 0 || f.ControlSum.Cmp(&sum) != 0 {
			t.Errorf("%s: GrpHdr CtrlSum %s (File.ControlSum %s), want %s", f.Currency, g.CtrlSum, f.ControlSum.Text('f'), sum.Text('f'))
		}
		if g.InitgPty != testDebtor.Name {
			t.Errorf("%s: InitgPty %q, want %q", f.Currency, g.InitgPty, testDebtor.Name)
		}
		if len(doc.PmtInf) != 1 {
			t.Fatalf("%s: %d PmtInf, want 1 (one currency per file)", f.Currency, len(doc.PmtInf))
		}
		pi := doc.PmtInf[0]
		if pi.PmtMtd != "TRF" || pi.NbOfTxs != g.NbOfTxs || pi.CtrlSum != g.CtrlSum || pi.PmtInfID == "" {
			t.Errorf("%s: PmtInf id %q, method %q, NbOfTxs %s, CtrlSum %s; want an id, TRF and the group header's %s, %s",
				f.Currency, pi.PmtInfID, pi.PmtMtd, pi.NbOfTxs, pi.CtrlSum, g.NbOfTxs, g.CtrlSum)
		}
		if pi.ReqdExctnDt != "2025-12-08" || f.ExecutionDate != "2025-12-08" {
			t.Errorf("%s: ReqdExctnDt %q (File %q), want 2025-12-08", f.Currency, pi.ReqdExctnDt, f.ExecutionDate)
		}
		if pi.Dbtr != testDebtor.Name || pi.DbtrIBAN != testDebtor.IBAN || pi.DbtrBIC != testDebtor.BIC {
			t.Errorf("%s: debtor %q %q %q, want %q %q %q", f.Currency, pi.Dbtr, pi.DbtrIBAN, pi.DbtrBIC, testDebtor.Name, testDebtor.IBAN, testDebtor.BIC)
		}
		if len(pi.Txs) != len(wantPaid) {
			t.Errorf("%s: %d credit transfers, want %d", f.Currency, len(pi.Txs), len(wantPaid))
		}
		seen := map[string]bool{}
		for _, tx := range pi.Txs {
			p, ok := wantPaid[tx.EndToEndID]
			if !ok || seen[tx.EndToEndID] {
				t.Errorf("%s: credit transfer %q is not one payment of the run (or is there twice)", f.Currency, tx.EndToEndID)
				continue
			}
			seen[tx.EndToEndID] = true
			if amt := dec(t, tx.Amount.Value); amt.Cmp(&p.Amount) != 0 || tx.Amount.Ccy != p.Currency {
				t.Errorf("%s: %s: amount %s %s, want %s %s", f.Currency, tx.EndToEndID, tx.Amount.Value, tx.Amount.Ccy, p.Amount.Text('f'), p.Currency)
			}
			if tx.Name != p.Payee.Name || tx.IBAN != p.Payee.IBAN || tx.Other != p.Payee.Account || tx.BIC != p.Payee.BIC {
				t.Errorf("%s: %s: creditor %q, IBAN %q, account %q, BIC %q; want %q, %q, %q, %q", f.Currency, tx.EndToEndID,
					tx.Name, tx.IBAN, tx.Other, tx.BIC, p.Payee.Name, p.Payee.IBAN, p.Payee.Account, p.Payee.BIC)
			}
			if !strings.Contains(tx.Ustrd, p.AffiliateID) || !strings.Contains(tx.Ustrd, "2025-11") || len([]rune(tx.Ustrd)) > 140 {
				t.Errorf("%s: %s: remittance %q, want the affiliate and the month, at most 140 characters", f.Currency, tx.EndToEndID, tx.Ustrd)
			}
		}
	}
	// Amounts with the currency's minor units, as text: JPY has none.
	if !bytes.Contains(files[0].XML, []byte(`<InstdAmt Ccy="JPY">15300</InstdAmt>`)) ||
		!bytes.Contains(files[1].XML, []byte(`<InstdAmt Ccy="USD">0.01</InstdAmt>`)) ||
		!bytes.Contains(files[1].XML, []byte(`<CtrlSum>10000120.50</CtrlSum>`)) {
		t.Errorf("amounts are not written with the currency's minor units:\n%s\n%s", files[0].XML, files[1].XML)
	}
	// The same run gives the same bytes.
	again, _, err := Files(run, payments, testDebtor, exec)
	if err != nil || len(again) != len(files) {
		t.Fatalf("building again: %v", err)
	}
	for i := range files {
		if !bytes.Equal(again[i].XML, files[i].XML) {
			t.Errorf("%s: building the same run twice gave different bytes", files[i].Currency)
		}
	}
}

// TestFilesElementOrder checks that the elements come in the order of the pain.001.001.09
// schema's sequences, which a validating bank enforces and Unmarshal does not.
func TestFilesElementOrder(t *testing.T) {
	run := Run{ID: 1, Program: "p", Month: "2025-11", ClosedAt: time.Date(2025, 12, 1, 9, 0, 0, 0, time.UTC)}
	files, _, err := Files(run, []Payment{{ID: 1, Program: "p", AffiliateID: "a", Currency: "EUR", Method: MethodWireTransfer, Amount: dec(t, "1.00"),
		Payee: &Payee{Program: "p", AffiliateID: "a", Party: Party{Name: "A", IBAN: "DE89370400440532013000", BIC: "DEUTDEFF"}}}}, testDebtor, ExecutionDate(run.ClosedAt))
	if err != nil {
		t.Fatal(err)
	}
	children := map[string][]string{}
	var stack []string
	d := xml.NewDecoder(bytes.NewReader(files[0].XML))
	for {
		tok, err := d.Token()
		if err != nil {
			break
		}
		switch e := tok.(type) {
		case xml.StartElement:
			if len(stack) > 0 {
				parent := stack[len(stack)-1]
				children[parent] = append(children[parent], e.Name.Local)
			}
			stack = append(stack, e.Name.Local)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		}
	}
	for parent, want := range map[string]string{
		"Document":         "CstmrCdtTrfInitn",
		"CstmrCdtTrfInitn": "GrpHdr PmtInf",
		"GrpHdr":           "MsgId CreDtTm NbOfTxs CtrlSum InitgPty",
		"PmtInf":           "PmtInfId PmtMtd NbOfTxs CtrlSum ReqdExctnDt Dbtr DbtrAcct DbtrAgt CdtTrfTxInf",
		"CdtTrfTxInf":      "PmtId Amt CdtrAgt Cdtr CdtrAcct RmtInf",
	} {
		if got := strings.Join(children[parent], " "); got != want {
			t.Errorf("%s's children: got %s, want %s", parent, got, want)
		}
	}
}

func TestFilesRefuse(t *testing.T) {
	run := Run{ID: 1, Program: "p", Month: "2025-11", ClosedAt: time.Date(2025, 12, 1, 9, 0, 0, 0, time.UTC)}
	good := Payee{Program: "p", AffiliateID: "a", Party: Party{Name: "A", IBAN: "DE89370400440532013000"}}
	pay := func(currency, amount string, payee *Payee) []Payment {
		return []Payment{{ID: 1, Program: "p", AffiliateID: "a", Currency: currency, Method: MethodWireTransfer, Amount: dec(t, amount), Payee: payee}}
	}
	for _, tc := range []struct {
		name     string
		payments []Payment
		debtor   Party
		why      string
	}{
		{"a wire payment without payee details", pay("USD", "1.00", nil), testDebtor, "no payee details recorded"},
		{"more decimals than the currency has", pay("JPY", "10.5", &good), testDebtor, "has more decimals than the currency's 0"},
		{"a negative amount", pay("USD", "-1.00", &good), testDebtor, "is not positive"},
		{"zero", pay("USD", "0.00", &good), testDebtor, "is not positive"},
		{"a currency that is not ISO 4217", pay("XYZ", "1.00", &good), testDebtor, `"XYZ" is not an ISO 4217 currency`},
		{"another program's payment", []Payment{{ID: 1, Program: "q", Method: MethodWireTransfer}}, testDebtor, "is of program q"},
		{"a debtor without a BIC", pay("USD", "1.00", &good), Party{Name: "D", IBAN: testDebtor.IBAN}, "the debtor needs"},
	} {
		_, _, err := Files(run, tc.payments, tc.debtor, ExecutionDate(run.ClosedAt))
		if err == nil || !strings.Contains(err.Error(), tc.why) {
			t.Errorf("%s: got %v, want an error saying %q", tc.name, err, tc.why)
		}
	}
	_, _, err := Files(run, pay("USD", "1.00", nil), testDebtor, time.Time{})
	if !errors.Is(err, ErrNoPayee) {
		t.Errorf("a wire payment without payee details: got %v, want ErrNoPayee", err)
	}
}

func TestExecutionDate(t *testing.T) {
	for closed, want := range map[string]string{
		"2025-12-01T23:59:59Z":      "2025-12-01", // Monday
		"2025-12-05T08:00:00Z":      "2025-12-05", // Friday
		"2025-12-06T08:00:00Z":      "2025-12-08", // Saturday
		"2025-12-07T08:00:00Z":      "2025-12-08", // Sunday
		"2025-12-07T23:30:00-05:00": "2025-12-08", // Monday in UTC
	} {
		at, err := time.Parse(time.RFC3339, closed)
		if err != nil {
			t.Fatal(err)
		}
		if got := ExecutionDate(at).Format(time.DateOnly); got != want {
			t.Errorf("ExecutionDate(%s) = %s, want %s", closed, got, want)
		}
	}
}
