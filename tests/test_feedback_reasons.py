"""mailer.feedback.reasons: a failed recipient's evidence in, a Verdict out.

The diagnostics are the wordings real receivers send, as documented by the providers
(Google, Microsoft, Yahoo, Apple, GMX/web.de, T-Online, Orange, GoDaddy, Cox, Mimecast)
and as quoted in sisimai's sources; addresses and IPs replaced by documentation values.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.feedback.reasons import Reason, Verdict, classify, extract_codes

R = Reason

# (id, status, reply_code, diagnostic, action, reason, hard, sender_side)
CASES = [
    # --- the recipient does not exist: hard -------------------------------------------
    ("gmail-nosuchuser", "5.1.1", None,
     "smtp; 550-5.1.1 The email account that you tried to reach does not exist. Please "
     "try\n 550-5.1.1 double-checking the recipient's email address for typos or\n "
     "550-5.1.1 unnecessary spaces. Learn more at\n 550 5.1.1  "
     "https://support.google.com/mail/?p=NoSuchUser a1si1234567wrb.12 - gsmtp",
     "failed", R.USERUNKNOWN, True, False),
    ("gmail-no-status-field", None, None,
     "550-5.1.1 The email account that you tried to reach does not exist. Please try "
     "550-5.1.1 double-checking the recipient's email address for typos",
     None, R.USERUNKNOWN, True, False),
    ("postfix-virtual", "5.1.1", None,
     "X-Postfix; host mx.example.nl[192.0.2.7] said: 550 5.1.1 <jan@example.nl>: "
     "Recipient address rejected: User unknown in virtual mailbox table (in reply to "
     "RCPT TO command)", "failed", R.USERUNKNOWN, True, False),
    ("postfix-local", "5.1.1", 550,
     "smtp; 550 5.1.1 <an@example.be>: Recipient address rejected: User unknown in local "
     "recipient table", "failed", R.USERUNKNOWN, True, False),
    ("exim-relay-table", "5.0.0", None,
     "SMTP error from remote mail server after RCPT TO:<piet@example.nl>: 550 5.1.1 "
     "<piet@example.nl>: Recipient address rejected: User unknown in relay recipient table",
     "failed", R.USERUNKNOWN, True, False),
    ("qmail", None, None, "Sorry, no mailbox here by that name. (#5.1.1)", None,
     R.USERUNKNOWN, True, False),
    ("exchange-recipnotfound", "5.1.1", None,
     "#550 5.1.1 RESOLVER.ADR.RecipNotFound; not found ##", "failed",
     R.USERUNKNOWN, True, False),
    ("office365-5.1.10", "5.1.10", None,
     "smtp; 550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP "
     "address lookup", "failed", R.USERUNKNOWN, True, False),
    ("office365-dbeb", "5.4.1", None,
     "smtp; 550 5.4.1 Recipient address rejected: Access denied. AS(201806281) "
     "[AM4PEPF00025F97.EURPRD83.prod.outlook.com 2024-05-21T10:15:12.345Z 08DC7A3C]",
     "failed", R.USERUNKNOWN, True, False),
    ("outlook-com", "5.5.0", None,
     "smtp; 550 5.5.0 Requested action not taken: mailbox unavailable (S2017062302). "
     "[DM6NAM12FT034.eop-nam12.prod.protection.outlook.com]", "failed",
     R.USERUNKNOWN, True, False),
    ("gmx-mailbox-unavailable", None, None,
     "550 Requested action not taken: mailbox unavailable", "failed",
     R.USERUNKNOWN, True, False),
    ("yahoo-no-account", None, None,
     "554 delivery error: dd This user doesn't have a yahoo.com account "
     "(someone@yahoo.com) [0] - mta1234.mail.bf1.yahoo.com", "failed",
     R.USERUNKNOWN, True, False),
    ("yahoo-after-data", None, None,
     "552 1 Requested mail action aborted, mailbox not found (in reply to end of DATA "
     "command)", "failed", R.USERUNKNOWN, True, False),
    ("aol", None, 550, "550 MAILBOX NOT FOUND", "failed", R.USERUNKNOWN, True, False),
    ("sendmail", "5.1.1", None, "smtp; 550 5.1.1 <someone@example.com>... User unknown",
     "failed", R.USERUNKNOWN, True, False),
    ("icloud-inactive", "5.1.1", None,
     "smtp; 550 5.1.1 <someone@icloud.com>: inactive email address (in reply to RCPT TO "
     "command)", "failed", R.USERUNKNOWN, True, False),
    ("icloud-alias", None, None, "550 5.1.1 unknown or illegal alias: someone@icloud.com",
     "failed", R.USERUNKNOWN, True, False),
    ("t-online", None, None, "550 5.1.1 user unknown", "failed", R.USERUNKNOWN, True, False),
    ("web-de", None, None, "550 Benutzer nicht bekannt/User unknown", "failed",
     R.USERUNKNOWN, True, False),
    ("domino", None, None, "User someone@example.com not listed in Domino Directory",
     "failed", R.USERUNKNOWN, True, False),
    ("dutch", "5.1.1", None,
     "smtp; 550 5.1.1 <jan@example.nl>: Recipient address rejected: onbekende gebruiker",
     "failed", R.USERUNKNOWN, True, False),
    ("dutch-no-code", None, None, "Dit e-mailadres bestaat niet: jan@example.nl", None,
     R.USERUNKNOWN, True, False),
    ("german", None, None, "550 5.1.1 Benutzer unbekannt", "failed",
     R.USERUNKNOWN, True, False),
    ("german-umlaut", None, None, "550 Empfänger unbekannt <hans@example.de>", "failed",
     R.USERUNKNOWN, True, False),
    ("french", None, None, "550 5.1.1 <marie@example.fr>: utilisateur inconnu", "failed",
     R.USERUNKNOWN, True, False),
    ("orange", None, None,
     "550 5.1.1 Adresse d au moins un destinataire invalide. Invalid recipient. OFR_416 "
     "[416]", "failed", R.USERUNKNOWN, True, False),
    ("mimecast", "5.0.0", None,
     "smtp; 550 Invalid Recipient - https://community.mimecast.com/docs/DOC-1369#550 "
     "[aBcDeFgH.uk1]", "failed", R.USERUNKNOWN, True, False),
    ("cpanel-exim", None, None, "550 No Such User Here", "failed", R.USERUNKNOWN, True, False),
    ("zoho", "5.1.1", None, "smtp; 550 5.1.1 User does not exist - <someone@example.com>",
     "failed", R.USERUNKNOWN, True, False),
    ("status-only", "5.1.1", None, "smtp; 550 5.1.1 <someone@example.com>: Recipient "
     "address rejected: someone@example.com", "failed", R.USERUNKNOWN, True, False),
    ("aol-5.1.0", None, None, "smtp; 550 #5.1.0 Address rejected someone@aol.com", "failed",
     R.USERUNKNOWN, True, False),
    ("postfix-local-unknown-user", "5.0.0", None,
     'X-Postfix; unknown user: "piet"', "failed", R.USERUNKNOWN, True, False),
    ("unknown-4xx-is-soft", "4.1.1", None,
     "smtp; 450 4.1.1 <someone@example.com>: Recipient address rejected: User unknown",
     "failed", R.USERUNKNOWN, False, False),
    # --- the domain does not exist ---------------------------------------------------
    ("postfix-host-not-found", "5.0.0", None,
     "X-Postfix; Host or domain name not found. Name service error for name=exmple.com "
     "type=A: Host not found", "failed", R.HOSTUNKNOWN, True, False),
    ("exim-unrouteable", "5.0.0", None, "Unrouteable address", "failed",
     R.HOSTUNKNOWN, True, False),
    ("gmail-nxdomain", None, None,
     "DNS Error: DNS type 'mx' lookup of example.invalid responded with code NXDOMAIN "
     "Domain name not found: example.invalid", "failed", R.HOSTUNKNOWN, True, False),
    ("exchange-nonexistent", "5.4.4", None,
     "smtp; 550 5.4.4 SMTPSEND.DNS.NonExistentDomain; nonexistent domain", "failed",
     R.HOSTUNKNOWN, True, False),
    ("sendmail-host-unknown", "5.1.2", None,
     "smtp; 550 5.1.2 <someone@example.invalid>... Host unknown (Name server: "
     "example.invalid: host not found)", "failed", R.HOSTUNKNOWN, True, False),
    ("gmail-badrcptdomain", None, None,
     "553 5.1.2 We weren't able to find the recipient domain. Please check for any "
     "spelling errors. https://support.google.com/mail/?p=BadRcptDomain", "failed",
     R.HOSTUNKNOWN, True, False),
    ("dns-try-again", "4.4.3", None,
     "X-Postfix; Host or domain name not found. Name service error for name=example.com "
     "type=MX: Host not found, try again", "delayed", R.NETWORKERROR, False, False),
    # --- moved, null MX ----------------------------------------------------------------
    ("icloud-moved", "5.1.6", None,
     "smtp; 550 5.1.6 recipient no longer on server: someone@icloud.com", "failed",
     R.HASMOVED, True, False),
    ("null-mx", "5.1.10", 556,
     "smtp; 556 5.1.10 <a@nullmx.example>: Recipient address rejected: Domain "
     "nullmx.example does not accept mail (nullMX)", "failed", R.NOTACCEPT, True, False),
    ("rfc7504-521", None, None, "521 5.3.2 mail.example.com does not accept mail",
     "failed", R.NOTACCEPT, True, False),
    ("notaccept-4xx-is-soft", "4.3.2", None,
     "smtp; 450 4.3.2 System not accepting network messages", "failed",
     R.NOTACCEPT, False, False),
    # --- the mailbox: soft ---------------------------------------------------------------
    ("gmail-over-quota", "5.2.2", None,
     "smtp; 552-5.2.2 The email account that you tried to reach is over quota. Please "
     "direct\n 552-5.2.2 the recipient to\n 552 5.2.2  "
     "https://support.google.com/mail/?p=OverQuotaPerm", "failed",
     R.MAILBOXFULL, False, False),
    ("gmail-out-of-storage", "4.2.2", None,
     "smtp; 452-4.2.2 The recipient's inbox is out of storage space. Please direct the "
     "recipient to https://support.google.com/mail/?p=OverQuotaTemp", "delayed",
     R.MAILBOXFULL, False, False),
    ("gmx-quota", "5.0.0", None, "smtp; 552 Mailbox quota exceeded", "failed",
     R.MAILBOXFULL, False, False),
    ("web-de-storage", None, None,
     "550 Benutzer hat das Speichervolumen ueberschritten. / User has exhausted allowed "
     "storage space.", "failed", R.MAILBOXFULL, False, False),
    ("t-online-quota", None, None, "552 5.2.2 Over STORAGE quota", "failed",
     R.MAILBOXFULL, False, False),
    ("exchange-quota", "5.2.2", None,
     "smtp; 554 5.2.2 mailbox full; STOREDRV.Deliver.Exception:QuotaExceededException."
     "MapiExceptionShutoffQuotaExceeded", "failed", R.MAILBOXFULL, False, False),
    ("dovecot-full", None, None,
     "552 5.2.2 <someone@example.com>: Recipient address rejected: Mailbox is full",
     "failed", R.MAILBOXFULL, False, False),
    ("maildrop", None, None, "Permission denied. Command output: maildrop: maildir over "
     "quota.", "failed", R.MAILBOXFULL, False, False),
    ("orange-full", None, None,
     "552 5.1.1 Boite du destinataire pleine. Recipient overquota. OFR_417 [417]",
     "failed", R.MAILBOXFULL, False, False),
    ("dutch-full", None, None, "452 4.2.2 De mailbox is vol", "failed",
     R.MAILBOXFULL, False, False),
    ("yahoo-disabled", None, None,
     "smtp; 554 30 Sorry, your message to someone@yahoo.com cannot be delivered. This "
     "mailbox is disabled (554.30)", "failed", R.SUSPEND, False, False),
    ("gmail-disabled", "5.2.1", None,
     "smtp; 550-5.2.1 The email account that you tried to reach is disabled. Learn more "
     "at https://support.google.com/mail/?p=DisabledUser", "failed",
     R.SUSPEND, False, False),
    ("gmx-inactive", None, None, "550 5.2.1 <someone@gmx.de>... User is inactive", "failed",
     R.SUSPEND, False, False),
    ("message-too-big", "5.3.4", None,
     "smtp; 552 5.3.4 Message size exceeds fixed maximum message size", "failed",
     R.MESGTOOBIG, False, False),
    ("gmail-too-big", None, None,
     "552-5.3.4 Your message exceeded Google's message size limits. Please visit "
     "https://support.google.com/mail/?p=MaxSizeError to view our size guidelines.",
     "failed", R.MESGTOOBIG, False, False),
    ("exceed-limit", "5.2.3", None,
     "smtp; 552 5.2.3 Message length exceeds administrative limit", "failed",
     R.EXCEEDLIMIT, False, False),
    ("filtered", None, None,
     "550 5.7.1 Message rejected due to user rules", "failed", R.FILTERED, False, False),
    # --- about us: soft and sender-side ----------------------------------------------
    ("exchange-spamhaus", "5.7.1", None,
     "smtp; 550 5.7.1 Service unavailable; Client host [192.0.2.25] blocked using "
     "Spamhaus. To request removal from this list see "
     "https://www.spamhaus.org/query/ip/192.0.2.25 (AS3130). "
     "[BN8NAM12FT045.eop-nam12.prod.protection.outlook.com]", "failed",
     R.BLOCKED, False, True),
    ("postfix-zen", "5.7.1", None,
     "smtp; 554 5.7.1 Service unavailable; Client host [192.0.2.25] blocked using "
     "zen.spamhaus.org; https://www.spamhaus.org/query/ip/192.0.2.25", "failed",
     R.BLOCKED, False, True),
    ("spamcop", None, None,
     "554 5.7.1 Service unavailable; Client host [192.0.2.25] blocked using "
     "bl.spamcop.net; Blocked - see https://www.spamcop.net/bl.shtml?192.0.2.25",
     "failed", R.BLOCKED, False, True),
    ("barracuda", None, None,
     "554 Service unavailable; Client host [192.0.2.25] blocked using Barracuda "
     "Reputation; http://www.barracudanetworks.com/reputation/?r=1&ip=192.0.2.25",
     "failed", R.BLOCKED, False, True),
    ("office365-banned-ip", None, None,
     "550 5.7.606 Access denied, banned sending IP [192.0.2.25]. To request removal from "
     "this list please visit https://sender.office.com/ and follow the directions. "
     "AS(1430)", "failed", R.BLOCKED, False, True),
    ("outlook-s3150", "5.7.1", None,
     "smtp; 550 5.7.1 Unfortunately, messages from [192.0.2.25] weren't sent. Please "
     "contact your Internet service provider since part of their network is on our block "
     "list (S3150). You can also refer your provider to "
     "http://mail.live.com/mail/troubleshooting.aspx#errors.", "failed",
     R.BLOCKED, False, True),
    ("t-online-bl", None, None,
     "host mx00.t-online.de[194.25.134.8] refused to talk to me: 554 IP=192.0.2.25 - A "
     "problem occurred. (Ask your postmaster for help or to contact tosa@rx.t-online.de "
     "to clarify.) (BL)", "failed", R.BLOCKED, False, True),
    ("gmx-block-listed", None, None,
     "554-gmx.net (mxgmx104) Nemesis ESMTP Service not available 554-No SMTP service "
     "554-IP address is block listed. 554 For explanation visit "
     "https://postmaster.gmx.net/en/case?c=r0201&i=ip&v=198.51.100.42&r=1MNcgj",
     "failed", R.BLOCKED, False, True),
    ("proofpoint", "5.7.1", None,
     "smtp; 554 5.7.1 Blocked - see https://ipcheck.proofpoint.com/?ip=192.0.2.25",
     "failed", R.BLOCKED, False, True),
    ("yahoo-bl21", None, None,
     "553 5.7.1 [BL21] Connections will not be accepted from 192.0.2.25, because the ip "
     "is in Spamhaus's list; see http://postmaster.yahoo.com/550-bl23.html", "failed",
     R.BLOCKED, False, True),
    ("gmail-unusual-rate", "4.7.28", None,
     "smtp; 421-4.7.28 [192.0.2.25      15] Gmail has detected an unusual rate of "
     "unsolicited mail originating from your IP address. To protect our users from spam, "
     "mail sent from your IP address has been temporarily rate limited. Please visit "
     "https://support.google.com/mail/?p=UnsolicitedRateLimitError to review our Bulk "
     "Email Senders Guidelines.", "delayed", R.BLOCKED, False, True),
    ("gmail-dos", "4.7.0", None, "smtp; 421 4.7.0 Try again later, closing connection.",
     "delayed", R.BLOCKED, False, True),
    ("orange-ip", None, None,
     "550 mwinf5c04 ME Adresse IP source bloquee pour incident de spam. Client host "
     "blocked for spamming issues. OFR006_102 Ref http://csi.cloudmark.com/reset-request",
     "failed", R.BLOCKED, False, True),
    ("free-fr", None, None,
     "550 5.7.1 Too many spams from your IP (192.0.2.25), please visit "
     "http://postmaster.free.fr/", "failed", R.BLOCKED, False, True),
    ("block-beats-5.1.1", "5.1.1", None,
     "smtp; 550 5.1.1 <someone@example.com>: rejected, client host [192.0.2.25] blocked "
     "using b.barracudacentral.org", "failed", R.BLOCKED, False, True),
    ("yahoo-tss04", None, None,
     "smtp; 421 4.7.0 [TSS04] Messages from 192.0.2.25 temporarily deferred due to "
     "unexpected volume or user complaints - 4.16.55.1; see "
     "https://postmaster.yahooinc.com/error-codes", "delayed",
     R.BADREPUTATION, False, True),
    ("gmail-low-reputation", None, None,
     "421-4.7.0 This message is suspicious due to the very low reputation of the sending "
     "IP address. To protect our users from spam, mail sent from your IP address has been "
     "temporarily rate limited.", "delayed", R.BADREPUTATION, False, True),
    ("outlook-ip-reputation", None, None,
     "451 4.7.650 The mail server [192.0.2.5] has been temporarily rate limited due to IP "
     "reputation. For e-mail delivery information, see https://postmaster.live.com (S775)",
     "delayed", R.BADREPUTATION, False, True),
    ("outlook-sc-001", None, None,
     "550 SC-001 (BAY004-MC1F40) Unfortunately, messages from 192.0.2.25 weren't sent. "
     "Please contact your Internet service provider.", "failed",
     R.BADREPUTATION, False, True),
    ("gmail-unauthenticated", "5.7.26", None,
     "smtp; 550-5.7.26 This mail has been blocked because the sender is unauthenticated. "
     "Gmail requires all senders to authenticate with either SPF or DKIM. Authentication "
     "results: DKIM = did not pass SPF [example.org] with ip: [192.0.2.25] = did not pass",
     "failed", R.AUTHFAILURE, False, True),
    ("gmail-dmarc", None, None,
     "550-5.7.26 Unauthenticated email from example.org is not accepted due to domain's "
     "DMARC policy. Please contact the administrator of example.org domain if this was a "
     "legitimate mail. https://support.google.com/mail/?p=DmarcRejection", "failed",
     R.AUTHFAILURE, False, True),
    ("outlook-dmarc", "5.7.509", None,
     "smtp; 550 5.7.509 Access denied, sending domain EXAMPLE.ORG does not pass DMARC "
     "verification and has a DMARC policy of reject.", "failed",
     R.AUTHFAILURE, False, True),
    ("outlook-auth-level", None, None,
     "550 5.7.515 Access denied, sending domain EXAMPLE.ORG doesn't meet the required "
     "authentication level.", "failed", R.AUTHFAILURE, False, True),
    ("yahoo-unauthenticated", None, None,
     "550 5.7.9 This mail has been blocked because the sender is unauthenticated. Yahoo "
     "requires all senders to authenticate with either SPF or DKIM.", "failed",
     R.AUTHFAILURE, False, True),
    ("apple-dmarc", "5.0.0", None,
     "smtp; 554 5.7.1 Your message was rejected due to example.org's DMARC policy. See "
     "https://support.apple.com/en-us/HT204137 for", "failed", R.AUTHFAILURE, False, True),
    ("mimecast-spf", None, None, "550 SPF Sender Invalid - envelope rejected", "failed",
     R.AUTHFAILURE, False, True),
    ("status-5.7.27", "5.7.27", None, "", "failed", R.AUTHFAILURE, False, True),
    ("sender-null-mx", "5.7.27", None, "smtp; 550 5.7.27 Sender address has null MX",
     "failed", R.REJECTED, False, True),
    ("gmail-ptr", "5.7.25", None,
     "smtp; 550-5.7.25 [192.0.2.25] The IP address sending this message does not have a "
     "PTR record setup, or the corresponding forward DNS entry does not point to the "
     "sending IP. As a policy, Gmail does not accept messages from IPs with missing PTR "
     "records.", "failed", R.REQUIREPTR, False, True),
    ("postfix-hostname", "4.7.1", None,
     "smtp; 450 4.7.1 Client host rejected: cannot find your hostname, [192.0.2.25]",
     "delayed", R.REQUIREPTR, False, True),
    ("content-filter", "5.7.1", None,
     "smtp; 550 5.7.1 Message rejected as spam by Content Filtering.", "failed",
     R.SPAMDETECTED, False, True),
    ("gmail-unsolicited", None, None,
     "550-5.7.1 [192.0.2.25] Our system has detected that this message is likely "
     "unsolicited mail. To reduce the amount of spam sent to Gmail, this message has been "
     "blocked. https://support.google.com/mail/?p=UnsolicitedMessageError", "failed",
     R.SPAMDETECTED, False, True),
    ("mail-ru", None, None,
     "550 spam message rejected. Please visit http://help.mail.ru/notspam-support/id?c=x",
     "failed", R.SPAMDETECTED, False, True),
    ("bare-spam", "5.7.1", None, "smtp; 554 5.7.1 Rejected: SPAM", "failed",
     R.SPAMDETECTED, False, True),
    ("godaddy-virus", None, None, "552 Virus infected message rejected. IB705", "failed",
     R.VIRUSDETECTED, False, True),
    ("virus", None, None, "554 5.7.0 Your message was infected with a virus", "failed",
     R.VIRUSDETECTED, False, True),
    ("yahoo-ph01", None, None,
     "554 Message not allowed - [PH01] Email not accepted for policy reasons. Please "
     "visit https://postmaster.yahooinc.com/error-codes", "failed",
     R.POLICYVIOLATION, False, True),
    ("apple-local-policy", "5.7.1", None,
     "smtp; 550 5.7.1 [CS01] Message rejected due to local policy. Please visit "
     "https://support.apple.com/en-us/HT204137", "failed", R.POLICYVIOLATION, False, True),
    ("gmail-security-content", None, None,
     "552-5.7.0 This message was blocked because its content presents a potential "
     "security issue. Please visit https://support.google.com/mail/?p=BlockedMessage",
     "failed", R.POLICYVIOLATION, False, True),
    ("relay-denied", "5.7.1", None,
     "smtp; 554 5.7.1 <someone@example.com>: Relay access denied", "failed",
     R.NORELAYING, False, True),
    ("exim-relay", None, 550, "550 relay not permitted", "failed", R.NORELAYING, False, True),
    ("exchange-unable-to-relay", None, None, "550 5.7.1 Unable to relay", "failed",
     R.NORELAYING, False, True),
    ("gmail-starttls", None, None, "530 5.7.0 Must issue a STARTTLS command first.",
     "failed", R.FAILEDSTARTTLS, False, True),
    ("auth-failed", None, None, "535 5.7.8 Error: authentication failed: UGFzc3dvcmQ6",
     "failed", R.SECURITYERROR, False, True),
    ("gmail-rfc5322", None, None,
     "550-5.7.1 [192.0.2.25] This message is not RFC 5322 compliant. There are multiple "
     "From headers. https://support.google.com/mail/?p=RfcMessageNonCompliant", "failed",
     R.NOTCOMPLIANTRFC, False, True),
    ("bare-lf", None, None,
     "550 5.6.11 SMTPSEND.BareLinefeedsAreIllegal; message contains bare linefeeds",
     "failed", R.CONTENTERROR, False, True),
    ("apple-speeding", None, None,
     "421 4.7.1 Messages to someone@icloud.com deferred due to excessive volume. Try again "
     "later - https://support.apple.com/en-us/HT204137", "delayed", R.SPEEDING, False, True),
    ("gmail-receiving-rate", "4.2.1", None,
     "smtp; 450-4.2.1 The user you are trying to contact is receiving mail at a rate that "
     "prevents additional messages from being delivered. Please resend your message at a "
     "later time. https://support.google.com/mail/?p=ReceivingRateTemp", "delayed",
     R.SPEEDING, False, True),
    ("postfix-slower", "4.7.1", None,
     "smtp; 451 4.7.1 <mx.example.org[192.0.2.2]>: Client host rejected: Please try again "
     "slower", "delayed", R.SPEEDING, False, True),
    ("ses-throttling", None, None, "454 Throttling failure: Maximum sending rate exceeded.",
     "failed", R.SPEEDING, False, True),
    ("postfix-too-many-connections", None, None,
     "421 4.7.0 mx.example.com Error: too many connections from 192.0.2.25", "delayed",
     R.TOOMANYCONN, False, True),
    ("yahoo-per-connection", None, None,
     "421 Max message per connection reached, closing transmission channel", "delayed",
     R.TOOMANYCONN, False, True),
    ("outlook-connections", None, None,
     "451 4.7.652 The mail server [192.0.2.251] has exceeded the maximum number of "
     "connections. (S3115)", "delayed", R.TOOMANYCONN, False, True),
    ("gmail-recipients", None, None,
     "452 4.5.3 Your message has too many recipients. For more information regarding "
     "Google's sending limits, visit https://support.google.com/mail/answer/6592",
     "delayed", R.TOOMANYCONN, False, True),
    # --- our sender address ----------------------------------------------------------------
    ("sender-domain-not-found", "5.1.8", None,
     "smtp; 550 5.1.8 <bounces+x@example.org>: Sender address rejected: Domain not found",
     "failed", R.REJECTED, False, True),
    ("sender-domain-sendmail", "5.1.8", None,
     "smtp; 553 5.1.8 <bounces@example.org>... Domain of sender address "
     "bounces@example.org does not exist", "failed", R.REJECTED, False, True),
    ("exim-sender-verify", None, None, "550 Sender verify failed", "failed",
     R.REJECTED, False, True),
    ("rejected-at-mail-from", None, None,
     "SMTP error from remote mail server after MAIL FROM:<bounces+abc@example.org> "
     "SIZE=12345: 550 5.7.1 Sender rejected", "failed", R.REJECTED, False, True),
    ("unknown-sender-at-mail-from", None, None,
     "host mx.example.com[192.0.2.1] said: 550 5.1.0 <bounces@example.org>: Sender "
     "address rejected: User unknown in local recipient table (in reply to MAIL FROM "
     "command)", "failed", R.REJECTED, False, True),
    ("status-5.1.7", "5.1.7", None, "", "failed", R.REJECTED, False, True),
    ("exchange-not-authorized", "5.7.1", None,
     "smtp; 550 5.7.1 Delivery not authorized, message refused", "failed",
     R.REJECTED, False, False),
    # --- transient and other ------------------------------------------------------------
    ("timeout", "4.4.1", None,
     "X-Postfix; connect to mx.example.com[192.0.2.1]:25: Connection timed out", "delayed",
     R.EXPIRED, False, False),
    ("exchange-expired", "4.4.7", None, "550 4.4.7 QUEUE.Expired; message expired",
     "failed", R.EXPIRED, False, False),
    ("qmail-no-connection", None, None,
     "Sorry, I wasn't able to establish an SMTP connection. (#4.4.1)", "failed",
     R.EXPIRED, False, False),
    ("connection-refused", None, None,
     "connect to mx.example.com[192.0.2.1]:25: Connection refused", None,
     R.NETWORKERROR, False, False),
    ("hop-count", "5.4.6", None, "554 5.4.6 Hop count exceeded - possible mail loop",
     "failed", R.NETWORKERROR, False, False),
    ("google-temporary", "4.3.0", None,
     "451 4.3.0 Temporary System Problem. Try again later.", "delayed",
     R.SYSTEMERROR, False, False),
    ("local-error", None, None, "451 Requested action aborted: local error in processing",
     "delayed", R.SYSTEMERROR, False, False),
    ("system-storage", "4.3.1", None, "452 4.3.1 Insufficient system storage", "delayed",
     R.SYSTEMFULL, False, False),
    ("procmail", "5.3.0", None,
     "X-Postfix; Command died with status 75: /usr/bin/procmail", "failed",
     R.MAILERERROR, False, False),
    ("bad-sequence", None, None, "503 5.5.1 Bad sequence of commands", "failed",
     R.SYNTAXERROR, False, False),
    ("greylisted", "4.2.0", None,
     "smtp; 450 4.2.0 <an@example.be>: Recipient address rejected: Greylisted, see "
     "https://postgrey.schweikert.ch/help/example.be.html", "delayed",
     R.ONHOLD, False, False),
    ("generic-5.0.0", "5.0.0", None, "", "failed", R.UNDEFINED, False, False),
    ("nothing", None, None, "", None, R.UNDEFINED, False, False),
    ("delayed-nothing", "4.0.0", None, "", "delayed", R.EXPIRED, False, False),
    ("delayed-4.4.7", "4.4.7", None, "", "delayed", R.EXPIRED, False, False),
    ("bare-5.7.1", "5.7.1", None, "smtp; 550 5.7.1 Access denied", "failed",
     R.SECURITYERROR, False, True),
    ("delivered", "2.0.0", 250, "smtp; 250 2.0.0 OK 1716280000 a1si123", "delivered",
     R.DELIVERED, False, False),
    ("relayed", None, None, "", "relayed", R.DELIVERED, False, False),
    ("success-status", "2.0.0", None, "250 ok dirdel", None, R.DELIVERED, False, False),
    ("vacation", None, None, "I am out of the office until Monday, 3 June.", None,
     R.VACATION, False, False),
    ("vacation-dutch", None, None, "Ik ben afwezig tot 3 juni. Automatisch antwoord.", None,
     R.VACATION, False, False),
    # --- Action delayed is never hard, whatever the code ------------------------------
    ("delayed-user-unknown", "5.1.1", None,
     "smtp; 550 5.1.1 <someone@example.com>: Recipient address rejected: User unknown",
     "delayed", R.USERUNKNOWN, False, False),
    # --- provider codes ---------------------------------------------------------------
    ("godaddy-spf", None, None,
     "550 someone@example.org Invalid SPF record. Inspect your SPF settings, and try "
     "again. IB508", "failed", R.AUTHFAILURE, False, True),
    ("cox-cxbl", None, None,
     "554 cxr.mx.a.cox.net cox connection refused from [192.0.2.25]. AUP#CXBL", "failed",
     R.BLOCKED, False, True),
    # --- more MTA families and appliances ---------------------------------------------
    ("exim-failing-hosts", None, None,
     "all hosts for 'example.com' have been failing for a long time (and retry time not "
     "reached)", "failed", R.EXPIRED, False, False),
    ("exim-mailbox-full", None, None, "mailbox is full: retry timeout exceeded", "failed",
     R.MAILBOXFULL, False, False),
    ("exim-disk-quota", "5.0.0", None, "save to mbox: Disk quota exceeded", "failed",
     R.MAILBOXFULL, False, False),
    ("exim-executable", None, None,
     'This message has been rejected because it has a potentially executable attachment '
     '"invoice.exe"', "failed", R.VIRUSDETECTED, False, True),
    ("exim-administrative", "5.0.0", None, "550 Administrative prohibition", "failed",
     R.REJECTED, False, False),
    ("exim-callout", None, None,
     "SMTP error from remote mail server after RCPT TO:<x@example.com>: 550-Verification "
     "failed for <bounces@example.org> 550-Unrouteable address 550 Sender verify failed",
     "failed", R.REJECTED, False, True),
    ("sendmail-deferred", None, None, "Deferred: Connection refused by mx.example.com.",
     "delayed", R.NETWORKERROR, False, False),
    ("sendmail-5-days", None, None, "Message could not be delivered for 5 days", "failed",
     R.EXPIRED, False, False),
    ("sendmail-no-such-user", "5.3.0", None, "553 5.3.0 <x@example.com>... No such user",
     "failed", R.USERUNKNOWN, True, False),
    ("sendmail-dnsbl", "5.7.1", None,
     "554 5.7.1 <x@example.com>... Rejected: 192.0.2.25 listed at zen.spamhaus.org",
     "failed", R.BLOCKED, False, True),
    ("postfix-lost-connection", None, None,
     "X-Postfix; lost connection with mx.example.com[192.0.2.1] while sending RCPT TO",
     "delayed", R.NETWORKERROR, False, False),
    ("qmail-no-host", None, None,
     "Sorry, I couldn't find any host named example.invalid. (#5.1.2)", None,
     R.HOSTUNKNOWN, True, False),
    ("qmail-no-mx", None, None,
     "Sorry, I couldn't find a mail exchanger or IP address. (#5.4.4)", None,
     R.HOSTUNKNOWN, True, False),
    ("qmail-quota", None, None,
     "The users mailfolder is over the allowed quota (size). (#5.2.2)", None,
     R.MAILBOXFULL, False, False),
    ("qmail-deferral", None, None,
     "deferral: Sorry_I_wasn't_able_to_establish_an_SMTP_connection._(#4.4.1)/", None,
     R.EXPIRED, False, False),
    ("qmail-badmailfrom", None, None,
     "Connected to 192.0.2.1 but sender was rejected. Remote host said: 553 sorry, your "
     "envelope sender is in my badmailfrom list (#5.7.1)", None, R.REJECTED, False, True),
    ("courier", None, None, "Unknown user: piet", None, R.USERUNKNOWN, True, False),
    ("domino-route", None, None,
     "Router: No route found to domain example.invalid from server mail1/Example", None,
     R.HOSTUNKNOWN, True, False),
    ("groupwise", None, None,
     "The message that you sent was undeliverable to the following: x@example.com "
     "(user not found)", None, R.USERUNKNOWN, True, False),
    ("barracuda-blocked", None, None,
     "550 permanent failure for one or more recipients (x@example.com:blocked)", "failed",
     R.BLOCKED, False, True),
    ("barracuda-spam", "5.0.0", None, "554 rejected due to spam content", "failed",
     R.SPAMDETECTED, False, True),
    ("ses-not-verified", None, None,
     "554 Message rejected: Email address is not verified. The following identities failed "
     "the check in region EU-WEST-1: bounces@example.org", "failed",
     R.NORELAYING, False, True),
    ("gmail-reputation-block", None, None,
     "550-5.7.1 [192.0.2.25] Our system has detected that this message is likely "
     "suspicious due to the very low reputation of the sending IP address.", "failed",
     R.BADREPUTATION, False, True),
    ("gmail-content-links", None, None,
     "421-4.7.0 [192.0.2.25] Our system has detected that this message is suspicious due "
     "to the nature of the content and/or the links within.", "delayed",
     R.SPAMDETECTED, False, True),
    ("gmail-domain-policy", None, None,
     "550-5.7.1 The user or domain that you are sending to (or from) has a policy that "
     "prohibited the mail that you sent.", "failed", R.POLICYVIOLATION, False, True),
    ("gmail-messageid", None, None,
     "550-5.7.1 Messages missing a valid messageId header are not accepted.", "failed",
     R.NOTCOMPLIANTRFC, False, True),
    ("gmail-human-part", None, None,
     "Delivery to the following recipient failed permanently: x@example.com Technical "
     "details of permanent failure: Google tried to deliver your message, but it was "
     "rejected by the server for the recipient domain example.com by mx.example.com. "
     "[192.0.2.1]. The error that the other server returned was: 550 5.1.1 "
     "<x@example.com>: Recipient address rejected: User unknown in virtual alias table",
     "failed", R.USERUNKNOWN, True, False),
    ("outlook-ou-001", None, None,
     "550 OU-001 (SNT004-MC1F43) Unfortunately, messages from 192.0.2.25 weren't sent.",
     "failed", R.BLOCKED, False, True),
    ("outlook-rp-001", None, None,
     "421 RP-001 (BAY004-MC1F42) Unfortunately, some messages from 192.0.2.25 weren't "
     "sent. Please try again.", "delayed", R.BADREPUTATION, False, True),
    ("office365-spam", None, None,
     "550 5.7.350 Remote server returned message detected as spam", "failed",
     R.SPAMDETECTED, False, True),
    ("office365-restricted-group", None, None,
     "550 5.7.133 RESOLVER.RST.SenderNotAuthenticatedForGroup; authentication required; "
     "Delivery restriction check failed as sender not authenticated", "failed",
     R.REJECTED, False, False),
    ("exchange-quota-exception", None, None,
     "554 5.2.0 STOREDRV.Deliver.Exception:QuotaExceededException."
     "MapiExceptionShutoffQuotaExceeded", "failed", R.MAILBOXFULL, False, False),
    ("office365-busy", None, None,
     "451 4.7.500 Server busy. Please try again later from [192.0.2.25]. (AS761)",
     "delayed", R.SYSTEMERROR, False, False),
    ("yahoo-tss09", None, None,
     "553 5.7.2 [TSS09] All messages from 192.0.2.25 will be permanently deferred; "
     "Retrying will NOT succeed.", "failed", R.BLOCKED, False, True),
    ("yahoo-discontinued", None, None,
     "554 delivery error: dd Sorry, your message to x@yahoo.com cannot be delivered. This "
     "account has been disabled or discontinued [#102].", "failed", R.SUSPEND, False, False),
    ("comcast-not-our-customer", None, None, "550 5.1.1 <x@comcast.net> Not our Customer",
     "failed", R.USERUNKNOWN, True, False),
    ("comcast-dnsbl", None, None,
     "554 resimta-ch2-18v.sys.comcast.net 192.0.2.25 found on one or more DNSBLs, see "
     "http://postmaster.comcast.net/smtp-error-codes.php#BL000001", "failed",
     R.BLOCKED, False, True),
    ("comcast-throttled", None, None,
     "421 resimta-po-33v.sys.comcast.net Throttled - try again later. Please see "
     "http://postmaster.comcast.net", "delayed", R.SPEEDING, False, True),
    ("gmx-policy", None, None,
     "554-Transaction failed 554-Reject due to policy restrictions. 554 For explanation "
     "visit https://postmaster.gmx.net/en/case?c=hi&i=ip&v=192.0.2.25", "failed",
     R.POLICYVIOLATION, False, True),
    ("storage-allocation", None, None,
     "552 Requested mail action aborted: exceeded storage allocation", "failed",
     R.MAILBOXFULL, False, False),
    ("sfr", None, None, "550 5.7.1 Client host rejected: Abus detecte GU_EIB_02", "failed",
     R.BLOCKED, False, True),
    ("laposte-archived", None, None,
     "550 5.5.0 Boite du destinataire archivee. Archived recipient. LPN007_420", "failed",
     R.SUSPEND, False, False),
    ("italian", None, None, "550 5.1.1 Utente sconosciuto", "failed",
     R.USERUNKNOWN, True, False),
    ("mimecast-blocked-senders", None, None,
     "550 Rejected by header based Blocked Senders - block policy for Header From - "
     "https://community.mimecast.com/docs/DOC-1369#550", "failed", R.REJECTED, False, True),
    ("mimecast-security", None, None,
     "554 Email rejected due to security policies - "
     "https://community.mimecast.com/docs/DOC-1369#554", "failed",
     R.POLICYVIOLATION, False, True),
    ("ironport-reputation", None, None,
     "550 #5.7.1 Your access to this mail system has been rejected due to the sending "
     "MTA's poor reputation.", "failed", R.BADREPUTATION, False, True),
    ("messagelabs-spf", None, None,
     "553-SPF (Sender Policy Framework) domain authentication fail", "failed",
     R.AUTHFAILURE, False, True),
    ("messagelabs-relay", None, None,
     "553-you are trying to use me [server-4.messagelabs.com] as a relay, but I have not "
     "been configured to let you [192.0.2.25, mail.example.org] do this.", "failed",
     R.NORELAYING, False, True),
    ("yandex-spam", None, None,
     "554 5.7.1 [2] Message rejected under suspicion of SPAM; https://ya.cc/1IrBc",
     "failed", R.SPAMDETECTED, False, True),
    ("mail-ru-user", None, None,
     "550 Message was not accepted -- invalid mailbox.  Local mailbox x@mail.ru is "
     "unavailable: user not found", "failed", R.USERUNKNOWN, True, False),
    ("netease-spam", None, None,
     "554 DT:SPM 163 smtp7,C8CowACX7A,  please see "
     "http://mail.163.com/help/help_spam_16.htm?ip=192.0.2.25", "failed",
     R.SPAMDETECTED, False, True),
    ("greylisting-in-action", "4.4.7", None,
     "smtp; 451 4.7.1 Greylisting in action, please come back later", "delayed",
     R.ONHOLD, False, False),
    ("nixspam", None, None,
     "554 5.7.1 Service unavailable; Client host [192.0.2.25] blocked using "
     "ix.dnsbl.manitu.net; Your e-mail service was detected by mx.example.de (NiX Spam) "
     "as spamming", "failed", R.BLOCKED, False, True),
    ("german-quota", None, None,
     "422 4.2.2 Quota limit exceeded (Speicherplatz des Kontos ueberschritten)", "delayed",
     R.MAILBOXFULL, False, False),
    ("german-spam", None, None,
     "571 5.7.1 message classified as spam (Nachricht als Spam eingestuft)", "failed",
     R.SPAMDETECTED, False, True),
    ("rate-limit-reached", None, None, "421 Rate limit reached. Please try again later",
     "delayed", R.SPEEDING, False, True),
    ("exchange-nl-full", None, None,
     "Het postvak van de ontvanger is vol en kan momenteel geen berichten ontvangen.", None,
     R.MAILBOXFULL, False, False),
    ("exchange-de-full", None, None,
     "Das Postfach des Empfängers ist voll und kann zurzeit keine Nachrichten annehmen.",
     None, R.MAILBOXFULL, False, False),
    ("exchange-fr-full", None, None,
     "La boîte aux lettres du destinataire est pleine et ne peut pas accepter de messages "
     "pour le moment.", None, R.MAILBOXFULL, False, False),
    ("exchange-de-unknown", None, None, "Die eingegebene E-Mail-Adresse wurde nicht gefunden.",
     None, R.USERUNKNOWN, True, False),
    ("exchange-fr-unknown", None, None,
     "L'adresse de messagerie que vous avez entrée est introuvable.", None,
     R.USERUNKNOWN, True, False),
    ("exchange-nl-unknown", None, None,
     "Het e-mailadres dat u hebt ingevoerd, is niet gevonden.", None,
     R.USERUNKNOWN, True, False),
]


@pytest.mark.parametrize(
    ("status", "reply_code", "diagnostic", "action", "reason", "hard", "sender_side"),
    [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_classify(status: str | None, reply_code: int | None, diagnostic: str,
                  action: str | None, reason: Reason, hard: bool, sender_side: bool) -> None:
    verdict = classify(status=status, reply_code=reply_code, diagnostic=diagnostic,
                       action=action)
    assert verdict == Verdict(reason, hard, sender_side)


def test_case_ids_are_unique() -> None:
    ids = [case[0] for case in CASES]
    assert len(ids) == len(set(ids))


def test_every_failure_reason_is_covered() -> None:
    covered = {case[5] for case in CASES}
    assert set(Reason) - covered <= {R.FEEDBACK}


@pytest.mark.parametrize("action", ["delivered", "relayed", "expanded", "Delivered "])
def test_success_actions_are_delivered(action: str) -> None:
    assert classify(status="5.1.1", diagnostic="550 5.1.1 user unknown",
                    action=action) == Verdict(R.DELIVERED, False, False)


def test_the_code_written_in_the_text_stands_in_for_a_generic_status() -> None:
    # Exim and Postfix write 5.0.0 in Status: when the remote's code is in the text.
    verdict = classify(status="5.0.0", diagnostic="550 5.1.1 <a@example.com>: rejected")
    assert verdict == Verdict(R.USERUNKNOWN, True, False)


def test_malformed_status_and_reply_are_ignored() -> None:
    for status in ("", "x.y.z", "5.1", "9.9.9", "5.1.1.1.1", "  ", "None"):
        assert classify(status=status, reply_code=-1, diagnostic="user unknown") \
            .reason is R.USERUNKNOWN
    assert classify(status="5.1.1", reply_code=99999).reason is R.USERUNKNOWN


def test_the_reply_class_decides_between_two_codes() -> None:
    verdict = classify(status="5.1.1", reply_code=450,
                       diagnostic="450 4.2.0 Recipient address rejected: Greylisted")
    assert not verdict.hard


def test_a_sender_side_verdict_is_never_hard() -> None:
    for case in CASES:
        verdict = classify(status=case[1], reply_code=case[2], diagnostic=case[3],
                           action=case[4])
        assert not (verdict.sender_side and verdict.hard), case[0]


def test_vacation_wording_in_a_bounce_is_not_a_vacation() -> None:
    verdict = classify(status="5.1.1", diagnostic="550 5.1.1 user unknown. I am out of "
                       "the office", action="failed")
    assert verdict.reason is R.USERUNKNOWN


def test_long_text_is_read_and_cut() -> None:
    filler = "The original message was received at Tue, 21 May 2024 10:15:12 +0200. " * 40
    assert classify(diagnostic="550 5.1.1 user unknown " + filler).reason \
        is R.USERUNKNOWN
    verdict = classify(diagnostic=filler * 20 + " user unknown")   # past the cut
    assert verdict.reason is R.UNDEFINED


def test_typographic_quotes_spaces_and_case_do_not_matter() -> None:
    plain = classify(diagnostic="554 delivery error: dd This user doesn't have a yahoo.com "
                     "account")
    fancy = classify(diagnostic="554 DELIVERY ERROR: dd This\u00a0user doesn\u2019t have a "
                     "Yahoo.com\n   account")
    assert plain == fancy == Verdict(R.USERUNKNOWN, True, False)


def test_phrases_match_whole_words() -> None:
    # "rbl" is a block list, "marble" is not; "rate limit" reads "rate limited"
    assert classify(status="5.1.1", diagnostic="550 5.1.1 <a@marblehead.example>: "
                    "user unknown").reason is R.USERUNKNOWN
    assert classify(status="5.7.1", diagnostic="550 5.7.1 listed in an RBL").reason \
        is R.BLOCKED
    assert classify(diagnostic="421 4.7.0 You are rate limited").reason is R.SPEEDING


def test_verdict_is_frozen() -> None:
    verdict = classify(diagnostic="user unknown")
    with pytest.raises(dataclasses.FrozenInstanceError):
        verdict.hard = False  # type: ignore[misc]


def test_reason_vocabulary() -> None:
    assert [r.value for r in Reason] == [
        "userunknown", "hostunknown", "hasmoved", "notaccept", "mailboxfull",
        "exceedlimit", "mesgtoobig", "suspend", "filtered", "rejected", "blocked",
        "policyviolation", "spamdetected", "virusdetected", "securityerror", "authfailure",
        "requireptr", "badreputation", "toomanyconn", "speeding", "expired", "networkerror",
        "systemerror", "systemfull", "mailererror", "contenterror", "notcompliantrfc",
        "syntaxerror", "norelaying", "failedstarttls", "onhold", "undefined", "delivered",
        "feedback", "vacation"]
    assert Reason("userunknown") == "userunknown"


# --- extract_codes ----------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("smtp; 550 5.1.1 <a@b>: Recipient address rejected", (550, "5.1.1")),
    ("#550 5.1.1 RESOLVER.ADR.RecipNotFound", (550, "5.1.1")),
    ("host mx.example.com[192.0.2.1] said: 550 5.1.1 <a@example.com>: User unknown",
     (550, "5.1.1")),
    ("smtp; 552-5.2.2 The email account that you tried to reach is over quota",
     (552, "5.2.2")),
    ("421-4.7.28 [192.0.2.25      15] Gmail has detected an unusual rate", (421, "4.7.28")),
    ("451 4.7.650 The mail server [192.0.2.5] has been temporarily rate limited",
     (451, "4.7.650")),
    ("550 5.7.515 Access denied, sending domain EXAMPLE.ORG", (550, "5.7.515")),
    ("Sorry, no mailbox here by that name. (#5.1.1)", (None, "5.1.1")),
    ("554 30 Sorry, your message cannot be delivered (554.30)", (554, None)),
    ("550 5.0.0 <a@example.com>... 550 5.1.1 User unknown", (550, "5.1.1")),
    ("mx.example.com ESMTP Postfix 2.5.1 said: 550 5.7.1 Blocked", (550, "5.7.1")),
    ("X-Postfix; 450 4.2.0 greylisted", (450, "4.2.0")),
    # not codes: IP addresses, ports, dates, times, versions, ids, quantities
    ("connect to mx.example.com[192.0.2.250]:25: Connection refused", (None, None)),
    ("connect to mx.example.com[10.5.1.1]:587: Connection timed out", (None, None)),
    ("lost connection with mail.example.com[2a01:111:f200:2004::250]", (None, None)),
    ("The original message was received at Tue, 21 May 2024 10:15:12 +0200", (None, None)),
    ("2024-05-21T10:15:12.345Z 08DC7A3C", (None, None)),
    ("on 25.12.2023 at 10:45", (None, None)),
    ("filter version 5.1.1 rejected it", (None, None)),
    ("AS(201806281) [DB5EUR03FT012.eop-EUR03.prod.protection.outlook.com]", (None, None)),
    ("queue id 4F2A550B1 deferred", (None, None)),
    ("retry after 450 seconds", (None, None)),
    ("message of 552 bytes", (None, None)),
    ("deferred - 4.16.55.1; see https://postmaster.yahooinc.com", (None, None)),
    ("451 Resources temporarily unavailable. Please try again later [#4.16.1].",
     (451, None)),
    ("", (None, None)),
])
def test_extract_codes(text: str, expected: tuple[int | None, str | None]) -> None:
    assert extract_codes(text) == expected


# --- never raises -----------------------------------------------------------------------

_statuses = st.one_of(st.none(), st.text(max_size=20),
                      st.from_regex(r"\A[245]\.\d{1,3}\.\d{1,3}\Z"))
_words = st.sampled_from([
    "550", "5.1.1", "user", "unknown", "blocked", "spamhaus", "mailbox", "full", "over",
    "quota", "-", "\n", "ü", "é", "'", "(#5.7.1)", "192.0.2.1", "rate limited", "ß",
    "in reply to MAIL FROM command", "550-5.1.1", "$", "[", "\x00", "\ud800", "not"])


@settings(max_examples=300, deadline=None)
@given(status=_statuses,
       reply_code=st.one_of(st.none(), st.integers(-10**6, 10**6)),
       diagnostic=st.one_of(st.text(max_size=400),
                            st.lists(_words, max_size=40).map(" ".join)),
       action=st.one_of(st.none(), st.text(max_size=12),
                        st.sampled_from(["failed", "delayed", "delivered", "relayed"])))
def test_classify_never_raises(status: str | None, reply_code: int | None,
                               diagnostic: str, action: str | None) -> None:
    verdict = classify(status=status, reply_code=reply_code, diagnostic=diagnostic,
                       action=action)
    assert isinstance(verdict.reason, Reason)
    assert not (verdict.hard and verdict.sender_side)
    if action == "delayed":
        assert not verdict.hard
    if verdict.hard:
        assert verdict.reason in (R.USERUNKNOWN, R.HOSTUNKNOWN, R.HASMOVED, R.NOTACCEPT)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300))
def test_extract_codes_never_raises(text: str) -> None:
    reply, status = extract_codes(text)
    assert reply is None or 200 <= reply <= 599
    assert status is None or status[0] in "245"
