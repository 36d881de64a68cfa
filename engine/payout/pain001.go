package payout

import (
	"bytes"
	"cmp"
	"encoding/xml"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cockroachdb/apd/v3"

	"github.com/commissioner/commissioner/engine"
)

// Namespace is the XML namespace of the bank files: pain.001.001.09, the customer credit
// transfer initiation of ISO 20022's 2019 release (the version SEPA and CBPR+ banks take).
const Namespace = "urn:iso:std:iso:20022:tech:xsd:pain.001.001.09"

// Run is the payout run a bank file pays: one program's closed month.
type Run struct {
	ID       int64
	Program  string
	Month    string    // "2026-10"
	ClosedAt time.Time // the file's creation time (CreDtTm)
}

// Payment is one statement a run paid: what the store recorded when it closed the month.
type Payment struct {
	ID          int64 // the payout's id, unique in the store: the transfer's end-to-end id
	Program     string
	AffiliateID string
	Currency    string
	Method      string
	Amount      apd.Decimal // > 0, with the currency's minor units
	Entries     int64       // the ledger entries it paid
	// Payee is the payee details it was paid to, as they were when the run closed; nil when
	// there were none (a statement paid by another method).
	Payee *Payee
}

// File is a bank file of a run: its wire-transfer payments in one currency.
type File struct {
	Program       string
	Currency      string
	MsgID         string      // the message identification (GrpHdr/MsgId)
	Transfers     int         // credit transfers (NbOfTxs)
	ControlSum    apd.Decimal // their amounts' sum (CtrlSum)
	ExecutionDate string      // requested execution date, YYYY-MM-DD
	XML           []byte      // the pain.001 document
}

// ExecutionDate is the default requested execution date of a run's transfers: the day it was
// closed (UTC), or the Monday after when that is a Saturday or a Sunday.
func ExecutionDate(closedAt time.Time) time.Time {
	d := time.Date(closedAt.UTC().Year(), closedAt.UTC().Month(), closedAt.UTC().Day(), 0, 0, 0, 0, time.UTC)
	switch d.Weekday() {
	case time.Saturday:
		return d.AddDate(0, 0, 2)
	case time.Sunday:
		return d.AddDate(0, 0, 1)
	}
	return d
}

// ErrNoPayee: a wire-transfer payment has no payee details recorded, so it cannot go into a bank
// file.
var ErrNoPayee = errors.New("no payee details recorded")

// Files builds the bank files of a run: one pain.001 document per currency of its
// wire-transfer payments, in currency order, each with one payment information block (paid from
// debtor, on the requested execution date exec) holding one credit transfer per payment, in
// affiliate order. Payments by another method go in no file and are returned apart. The message
// identification is derived from the run, its month and the currency; the creation time is the
// run's closing time; so the same run gives the same files, byte for byte. debtor must be
// normalized (Party.Normalize) and have a BIC.
func Files(run Run, payments []Payment, debtor Party, exec time.Time) ([]File, []Payment, error) {
	if debtor.Name == "" || (debtor.IBAN == "" && debtor.Account == "") || debtor.BIC == "" {
		return nil, nil, errors.New("building the bank file: the debtor needs a name, an IBAN (or account) and a BIC")
	}
	byCurrency := map[string][]Payment{}
	var others []Payment
	for _, p := range payments {
		if p.Program != run.Program {
			return nil, nil, fmt.Errorf("building the bank file of run %d (%s): payout %d is of program %s", run.ID, run.Program, p.ID, p.Program)
		}
		if p.Method != MethodWireTransfer {
			others = append(others, p)
			continue
		}
		if p.Payee == nil {
			return nil, nil, fmt.Errorf("building the bank file of run %d: payout %d to %s (%s %s): %w", run.ID, p.ID, p.AffiliateID,
				p.Amount.Text('f'), p.Currency, ErrNoPayee)
		}
		byCurrency[p.Currency] = append(byCurrency[p.Currency], p)
	}
	currencies := make([]string, 0, len(byCurrency))
	for c := range byCurrency {
		currencies = append(currencies, c)
	}
	slices.Sort(currencies)
	var files []File
	for _, c := range currencies {
		f, err := buildFile(run, c, byCurrency[c], debtor, exec)
		if err != nil {
			return nil, nil, fmt.Errorf("building the %s bank file of run %d (%s %s): %w", c, run.ID, run.Program, run.Month, err)
		}
		files = append(files, f)
	}
	return files, others, nil
}

// MsgID is the message identification of a run's file in a currency (at most 35 characters).
func MsgID(run Run, currency string) string {
	return fmt.Sprintf("COMM-%d-%s-%s", run.ID, strings.ReplaceAll(run.Month, "-", ""), currency)
}

func buildFile(run Run, currency string, ps []Payment, debtor Party, exec time.Time) (File, error) {
	cur, ok := engine.LookupCurrency(currency)
	if !ok {
		return File{}, fmt.Errorf("%q is not an ISO 4217 currency", currency)
	}
	ps = slices.Clone(ps)
	slices.SortFunc(ps, func(a, b Payment) int {
		if c := strings.Compare(a.AffiliateID, b.AffiliateID); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	f := File{Program: run.Program, Currency: currency, MsgID: MsgID(run, currency), Transfers: len(ps),
		ExecutionDate: exec.UTC().Format(time.DateOnly)}
	if len(f.MsgID) > 35 {
		return File{}, fmt.Errorf("message id %q is longer than 35 characters", f.MsgID)
	}
	f.ControlSum.SetFinite(0, -cur.MinorUnits)
	txs := make([]creditTransfer, 0, len(ps))
	for _, p := range ps {
		amount, err := amountText(&p.Amount, cur)
		if err != nil {
			return File{}, fmt.Errorf("payout %d to %s: %w", p.ID, p.AffiliateID, err)
		}
		if _, err := engine.SumContext.Add(&f.ControlSum, &f.ControlSum, &p.Amount); err != nil {
			return File{}, fmt.Errorf("summing the amounts: %w", err)
		}
		tx := creditTransfer{
			PmtID:    paymentID{EndToEndID: fmt.Sprintf("COMM-%s-P%d", strings.ReplaceAll(run.Month, "-", ""), p.ID)},
			Amt:      amountXML{InstdAmt: instructedAmount{Ccy: currency, Value: amount}},
			Cdtr:     partyXML{Nm: p.Payee.Name},
			CdtrAcct: accountOf(p.Payee.Party),
			RmtInf: remittance{Ustrd: truncate(fmt.Sprintf("Commission %s %s, affiliate %s, payout %d",
				run.Program, run.Month, p.AffiliateID, p.ID), 140)},
		}
		if p.Payee.BIC != "" {
			tx.CdtrAgt = &agentXML{FinInstnID: finInstnID{BICFI: p.Payee.BIC}}
		}
		txs = append(txs, tx)
	}
	sum, err := amountText(&f.ControlSum, cur)
	if err != nil {
		return File{}, fmt.Errorf("the control sum: %w", err)
	}
	n := strconv.Itoa(len(txs))
	doc := document{Initiation: initiation{
		GrpHdr: groupHeader{MsgID: f.MsgID, CreDtTm: run.ClosedAt.UTC().Format("2006-01-02T15:04:05Z"), NbOfTxs: n, CtrlSum: sum,
			InitgPty: partyXML{Nm: debtor.Name}},
		PmtInf: []paymentInfo{{
			PmtInfID: f.MsgID, PmtMtd: "TRF", NbOfTxs: n, CtrlSum: sum,
			ReqdExctnDt: dateXML{Dt: f.ExecutionDate},
			Dbtr:        partyXML{Nm: debtor.Name}, DbtrAcct: accountOf(debtor), DbtrAgt: agentXML{FinInstnID: finInstnID{BICFI: debtor.BIC}},
			CdtTrfTxInf: txs,
		}},
	}}
	var buf bytes.Buffer
	buf.WriteString(xml.Header)
	enc := xml.NewEncoder(&buf)
	enc.Indent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return File{}, fmt.Errorf("encoding: %w", err)
	}
	buf.WriteByte('\n')
	f.XML = buf.Bytes()
	return f, nil
}

// amountText writes a positive amount with the currency's minor units ("12.30", JPY "1230"); an
// amount with more decimals than the currency has, zero or negative, is an error.
func amountText(d *apd.Decimal, cur engine.Currency) (string, error) {
	if d.Sign() <= 0 || d.Form != apd.Finite {
		return "", fmt.Errorf("amount %s %s is not positive: only a positive balance is paid", d.Text('f'), cur.Code)
	}
	var q apd.Decimal
	if _, err := engine.SumContext.Quantize(&q, d, -cur.MinorUnits); err != nil {
		return "", fmt.Errorf("amount %s %s has more decimals than the currency's %d", d.Text('f'), cur.Code, cur.MinorUnits)
	}
	return q.Text('f'), nil
}

func accountOf(p Party) accountXML {
	if p.IBAN != "" {
		return accountXML{ID: accountID{IBAN: p.IBAN}}
	}
	return accountXML{ID: accountID{Othr: &otherID{ID: p.Account}}}
}

// truncate cuts s to at most n characters.
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n])
}

// The pain.001.001.09 elements a file uses, in the schema's order.

type document struct {
	XMLName    xml.Name   `xml:"urn:iso:std:iso:20022:tech:xsd:pain.001.001.09 Document"`
	Initiation initiation `xml:"CstmrCdtTrfInitn"`
}

type initiation struct {
	GrpHdr groupHeader   `xml:"GrpHdr"`
	PmtInf []paymentInfo `xml:"PmtInf"`
}

type groupHeader struct {
	MsgID    string   `xml:"MsgId"`
	CreDtTm  string   `xml:"CreDtTm"`
	NbOfTxs  string   `xml:"NbOfTxs"`
	CtrlSum  string   `xml:"CtrlSum"`
	InitgPty partyXML `xml:"InitgPty"`
}

type paymentInfo struct {
	PmtInfID    string           `xml:"PmtInfId"`
	PmtMtd      string           `xml:"PmtMtd"`
	NbOfTxs     string           `xml:"NbOfTxs"`
	CtrlSum     string           `xml:"CtrlSum"`
	ReqdExctnDt dateXML          `xml:"ReqdExctnDt"`
	Dbtr        partyXML         `xml:"Dbtr"`
	DbtrAcct    accountXML       `xml:"DbtrAcct"`
	DbtrAgt     agentXML         `xml:"DbtrAgt"`
	CdtTrfTxInf []creditTransfer `xml:"CdtTrfTxInf"`
}

type dateXML struct {
	Dt string `xml:"Dt"`
}

type partyXML struct {
	Nm string `xml:"Nm"`
}

type accountXML struct {
	ID accountID `xml:"Id"`
}

type accountID struct {
	IBAN string   `xml:"IBAN,omitempty"`
	Othr *otherID `xml:"Othr,omitempty"`
}

type otherID struct {
	ID string `xml:"Id"`
}

type agentXML struct {
	FinInstnID finInstnID `xml:"FinInstnId"`
}

type finInstnID struct {
	BICFI string `xml:"BICFI"`
}

type creditTransfer struct {
	PmtID    paymentID  `xml:"PmtId"`
	Amt      amountXML  `xml:"Amt"`
	CdtrAgt  *agentXML  `xml:"CdtrAgt,omitempty"`
	Cdtr     partyXML   `xml:"Cdtr"`
	CdtrAcct accountXML `xml:"CdtrAcct"`
	RmtInf   remittance `xml:"RmtInf"`
}

type paymentID struct {
	EndToEndID string `xml:"EndToEndId"`
}

type amountXML struct {
	InstdAmt instructedAmount `xml:"InstdAmt"`
}

type instructedAmount struct {
	Ccy   string `xml:"Ccy,attr"`
	Value string `xml:",chardata"`
}

type remittance struct {
	Ustrd string `xml:"Ustrd"`
}
