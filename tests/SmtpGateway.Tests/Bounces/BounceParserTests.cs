using System.Diagnostics;
using System.Text;
using SmtpGateway.Bounces;

namespace SmtpGateway.Tests.Bounces;

public sealed class BounceParserTests
{
    /// <summary>Parses <paramref name="message"/> (LF line ends become CRLF, as on the wire) and records every address offered.</summary>
    static (IReadOnlyList<BounceFinding> Findings, List<string> Offered) Parse(string message, params string[] candidates)
    {
        var offered = new List<string>();
        using var stream = new MemoryStream(Encoding.UTF8.GetBytes(message.ReplaceLineEndings("\r\n")));
        var findings = BounceParser.Parse(stream, address =>
        {
            offered.Add(address);
            return candidates.Contains(address, StringComparer.OrdinalIgnoreCase);
        });
        return (findings, offered);
    }

    static void AssertOneLine(string? value, int max = BounceParser.MaxDiagnosticChars)
    {
        if (value is null)
        {
            return;
        }

        Assert.True(value.Length <= max, $"{value.Length} > {max}");
        Assert.DoesNotContain(value, c => char.IsControl(c) || c is '\u2028' or '\u2029' or '\u202E' or '\u200B');
        Assert.Equal(value.Trim(), value);
    }

    const string PostfixDsn = """
        Return-Path: <>
        Received: by mail.example.net (Postfix)
        	id 4VfK2B0Z3Gz9sRl; Tue, 14 May 2024 10:15:02 +0000 (UTC)
        Date: Tue, 14 May 2024 10:15:02 +0000 (UTC)
        From: MAILER-DAEMON@mail.example.net (Mail Delivery System)
        Subject: Undelivered Mail Returned to Sender
        To: bounces+k3j4h5@gw.example
        Auto-Submitted: auto-replied
        MIME-Version: 1.0
        Content-Type: multipart/report; report-type=delivery-status;
        	boundary="4VfK2B0Z3Gz9sRl.1715681702/mail.example.net"
        Content-Transfer-Encoding: 8bit
        Message-Id: <20240514101502.4VfK2B0Z3Gz9sRl@mail.example.net>

        This is a MIME-encapsulated message.

        --4VfK2B0Z3Gz9sRl.1715681702/mail.example.net
        Content-Description: Notification
        Content-Type: text/plain; charset=utf-8
        Content-Transfer-Encoding: 8bit

        This is the mail system at host mail.example.net.

        I'm sorry to have to inform you that your message could not
        be delivered to one or more recipients. It's attached below.

        For further assistance, please send mail to postmaster.

        If you do so, please include this problem report. You can
        delete your own text from the attached returned message.

                           The mail system

        <u@example.net>: host mx1.example.net[203.0.113.25] said: 550 5.1.1
            <u@example.net>: Recipient address rejected: User unknown in virtual
            mailbox table (in reply to RCPT TO command)

        --4VfK2B0Z3Gz9sRl.1715681702/mail.example.net
        Content-Description: Delivery report
        Content-Type: message/delivery-status

        Reporting-MTA: dns; mail.example.net
        X-Postfix-Queue-ID: 4VfK2B0Z3Gz9sRl
        X-Postfix-Sender: rfc822; bounces+k3j4h5@gw.example
        Arrival-Date: Tue, 14 May 2024 10:15:01 +0000 (UTC)

        Final-Recipient: rfc822; u@example.net
        Original-Recipient: rfc822;u@example.net
        Action: failed
        Status: 5.1.1
        Remote-MTA: dns; mx1.example.net
        Diagnostic-Code: smtp; 550 5.1.1 <u@example.net>: Recipient address rejected:
            User unknown in virtual mailbox table

        --4VfK2B0Z3Gz9sRl.1715681702/mail.example.net
        Content-Description: Undelivered Message Headers
        Content-Type: text/rfc822-headers
        Content-Transfer-Encoding: 8bit

        Return-Path: <bounces+k3j4h5@gw.example>
        Received: from gw.example (gw.example [192.0.2.10])
        	by mail.example.net (Postfix) with ESMTPS id 4VfK2B0Z3Gz9sRl
        	for <u@example.net>; Tue, 14 May 2024 10:15:01 +0000 (UTC)
        From: Newsletter <news@tenant-a.example>
        To: u@example.net
        Subject: May newsletter
        Message-ID: <m1@tenant-a.example>

        --4VfK2B0Z3Gz9sRl.1715681702/mail.example.net--
        """;

    [Fact]
    public void Postfix_DSN_gives_a_hard_bounce_for_the_original_recipient()
    {
        var (findings, offered) = Parse(PostfixDsn, "u@example.net");

        var f = Assert.Single(findings);
        Assert.Equal(BounceKind.HardBounce, f.Kind);
        Assert.Equal("u@example.net", f.Recipient);
        Assert.Equal("5.1.1", f.Status);
        Assert.Equal("550 5.1.1 <u@example.net>: Recipient address rejected: User unknown in virtual mailbox table", f.Diagnostic);
        Assert.Equal("mail.example.net", f.ReportingMta);
        Assert.Null(f.FeedbackType);
        Assert.Equal("dsn", f.Format);
        // Bare addr-specs only: no address type, no brackets; each distinct address asked once.
        Assert.Equal(["u@example.net"], offered);
    }

    [Fact]
    public void DSN_recipient_that_is_not_ours_is_reported_without_an_address()
    {
        var (findings, _) = Parse(PostfixDsn, "someone-else@example.net");

        var f = Assert.Single(findings);
        Assert.Equal(BounceKind.HardBounce, f.Kind);
        Assert.Null(f.Recipient);
        Assert.Equal("5.1.1", f.Status);
    }

    [Fact]
    public void Delayed_DSN_is_a_soft_bounce()
    {
        const string dsn = """
            From: MAILER-DAEMON@mail.example.net (Mail Delivery System)
            Subject: Delayed Mail (still being retried)
            To: bounces+aa@gw.example
            MIME-Version: 1.0
            Content-Type: multipart/report; report-type=delivery-status; boundary="B1"

            --B1
            Content-Type: text/plain

            ####################################################################
            # THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #
            ####################################################################

            Your message could not be delivered for more than 4 hour(s).
            It will be retried until it is 5 day(s) old.

            --B1
            Content-Type: message/delivery-status

            Reporting-MTA: dns; mail.example.net
            X-Postfix-Queue-ID: 4VfL0000001
            Arrival-Date: Tue, 14 May 2024 06:00:00 +0000 (UTC)

            Final-Recipient: rfc822; slow@example.org
            Original-Recipient: rfc822;slow@example.org
            Action: delayed
            Status: 4.4.1
            Diagnostic-Code: X-Postfix; connect to mx.example.org[198.51.100.7]:25:
                Connection timed out
            Will-Retry-Until: Sun, 19 May 2024 06:00:00 +0000 (UTC)

            --B1--
            """;
        var (findings, _) = Parse(dsn, "slow@example.org");

        var f = Assert.Single(findings);
        Assert.Equal(BounceKind.SoftBounce, f.Kind);
        Assert.Equal("slow@example.org", f.Recipient);
        Assert.Equal("4.4.1", f.Status);
        Assert.Equal("connect to mx.example.org[198.51.100.7]:25: Connection timed out", f.Diagnostic);
    }

    const string MultiRecipientDsn = """
        From: Mail Delivery System <MAILER-DAEMON@relay.example.com>
        Subject: Delivery Status Notification
        MIME-Version: 1.0
        Content-Type: multipart/mixed; boundary="outer"

        --outer
        Content-Type: multipart/report; report-type=delivery-status; boundary="inner"

        --inner
        Content-Type: text/plain

        Delivery to some recipients failed.

        --inner
        Content-Type: message/delivery-status

        Reporting-MTA: dns;relay.example.com

        Final-Recipient: rfc822;a@example.net
        Action: failed
        Status: 5.1.1
        Diagnostic-Code: smtp; 550 5.1.1 no such user

        Final-Recipient: rfc822; forwarded-to@elsewhere.example
        Original-Recipient: rfc822; B@Example.org
        Action: failed
        Status: 4.2.2
        Diagnostic-Code: smtp; 452 4.2.2 mailbox full

        Final-Recipient: rfc822; c@example.com
        Action: delivered
        Status: 2.0.0

        Final-Recipient: RFC822; <d@example.com>
        Action: failed
        Diagnostic-Code: smtp; 554 5.7.1 rejected by policy

        --inner--

        --outer--
        """;

    [Fact]
    public void Multi_recipient_DSN_reports_every_group_but_names_only_the_candidate()
    {
        var (findings, offered) = Parse(MultiRecipientDsn, "b@example.org");

        Assert.Equal(4, findings.Count);
        Assert.All(findings, f => Assert.Equal("relay.example.com", f.ReportingMta));
        Assert.Equal([BounceKind.HardBounce, BounceKind.SoftBounce, BounceKind.Delivered, BounceKind.HardBounce], findings.Select(f => f.Kind));
        Assert.Equal([null, "B@Example.org", null, null], findings.Select(f => f.Recipient));
        Assert.Equal(["5.1.1", "4.2.2", "2.0.0", "5.7.1"], findings.Select(f => f.Status));
        Assert.Equal("452 4.2.2 mailbox full", findings[1].Diagnostic);
        // Original-Recipient (what we sent to) passed, so the forwarding target was never needed.
        Assert.DoesNotContain("forwarded-to@elsewhere.example", offered);
        Assert.Contains("d@example.com", offered);
    }

    [Fact]
    public void Final_recipient_is_used_when_there_is_no_matching_original_recipient()
    {
        var (findings, _) = Parse(MultiRecipientDsn, "a@example.net");

        Assert.Equal("a@example.net", findings[0].Recipient);
        Assert.All(findings.Skip(1), f => Assert.Null(f.Recipient));
    }

    [Fact]
    public void Global_DSN_decodes_utf8_address_escapes()
    {
        const string dsn = """
            From: MAILER-DAEMON@mx.example.de
            Subject: Undelivered Mail Returned to Sender
            MIME-Version: 1.0
            Content-Type: multipart/report; report-type=global-delivery-status; boundary="G"

            --G
            Content-Type: text/plain; charset=utf-8

            failed

            --G
            Content-Type: message/global-delivery-status

            Reporting-MTA: dns; mx.example.de

            Original-Recipient: utf-8; j\x{00F6}rg@b\x{00FC}cher.example
            Final-Recipient: utf-8; j\x{00F6}rg@b\x{00FC}cher.example
            Action: failed
            Status: 5.1.1

            --G--
            """;
        var (findings, offered) = Parse(dsn, "jörg@bücher.example");

        var f = Assert.Single(findings);
        Assert.Equal("jörg@bücher.example", f.Recipient);
        Assert.Equal(BounceKind.HardBounce, f.Kind);
        Assert.DoesNotContain(offered, a => a.Contains('\\', StringComparison.Ordinal));
    }

    /// <summary>RFC 5965 Appendix B.2.</summary>
    internal const string ArfComplete = """
        From: <abusedesk@example.com>
        Date: Thu, 8 Mar 2005 17:40:36 EDT
        Subject: FW: Earn money
        To: <abuse@example.net>
        MIME-Version: 1.0
        Content-Type: multipart/report; report-type=feedback-report;
             boundary="part1_13d.2e68ed54_boundary"

        --part1_13d.2e68ed54_boundary
        Content-Type: text/plain; charset="US-ASCII"
        Content-Transfer-Encoding: 7bit

        This is an email abuse report for an email message received from IP
        192.0.2.1 on Thu, 8 Mar 2005 14:00:00 EDT.  For more information
        about this format please see http://www.mipassoc.org/arf/.

        --part1_13d.2e68ed54_boundary
        Content-Type: message/feedback-report

        Feedback-Type: abuse
        User-Agent: SomeGenerator/1.0
        Version: 1
        Original-Mail-From: <somespammer@example.net>
        Original-Rcpt-To: <user@example.com>
        Arrival-Date: Thu, 8 Mar 2005 14:00:00 EDT
        Reporting-MTA: dns; mail.example.com
        Source-IP: 192.0.2.1
        Authentication-Results: mail.example.com;
                       spf=fail smtp.mail=somespammer@example.com
        Reported-Domain: example.net
        Reported-Uri: http://example.net/earn_money.html
        Reported-Uri: mailto:user@example.com
        Removal-Recipient: user@example.com

        --part1_13d.2e68ed54_boundary
        Content-Type: message/rfc822
        Content-Disposition: inline

        From: <somespammer@example.net>
        Received: from mailserver.example.net (mailserver.example.net
                [192.0.2.1]) by example.com with ESMTP id M63d4137594e46;
                Thu, 08 Mar 2005 14:00:00 -0400
        To: <Undisclosed Recipients>
        Subject: Earn money
        MIME-Version: 1.0
        Content-type: text/plain
        Message-ID: 8787KJKJ3K4J3K4J3K4J3.mail@example.net
        Date: Thu, 02 Sep 2004 12:31:03 -0500

        Spam Spam Spam
        Spam Spam Spam
        Spam Spam Spam
        Spam Spam Spam
        --part1_13d.2e68ed54_boundary--
        """;

    [Fact]
    public void RFC5965_example_report_is_a_complaint()
    {
        var (findings, offered) = Parse(ArfComplete, "user@example.com");

        var f = Assert.Single(findings);
        Assert.Equal(new BounceFinding(BounceKind.Complaint, "user@example.com", null, null, "mail.example.com", "abuse", "arf"), f);
        // The envelope sender and Authentication-Results are not recipients.
        Assert.DoesNotContain("somespammer@example.net", offered);
        Assert.DoesNotContain("somespammer@example.com", offered);
    }

    [Fact]
    public void ARF_without_Original_Rcpt_To_finds_the_recipient_in_the_enclosed_message()
    {
        var report = ArfComplete
            .Replace("Original-Rcpt-To: <user@example.com>\n", "", StringComparison.Ordinal)
            .Replace("To: <Undisclosed Recipients>", "To: \"Someone Else\" <other@example.com>, \"User\" <User@Example.com>", StringComparison.Ordinal);
        var (findings, _) = Parse(report, "user@example.com");

        var f = Assert.Single(findings);
        Assert.Equal(BounceKind.Complaint, f.Kind);
        Assert.Equal("User@Example.com", f.Recipient);
    }

    [Fact]
    public void ARF_not_spam_is_not_a_complaint()
    {
        var (findings, _) = Parse(ArfComplete.Replace("Feedback-Type: abuse", "Feedback-Type: Not-Spam", StringComparison.Ordinal), "user@example.com");

        var f = Assert.Single(findings);
        Assert.Equal(BounceKind.Unknown, f.Kind);
        Assert.Equal("not-spam", f.FeedbackType);
        Assert.Equal("user@example.com", f.Recipient);
    }

    [Fact]
    public void Qmail_bounce_is_read_from_the_text()
    {
        const string qmail = """
            Return-Path: <>
            Date: 14 May 2024 10:20:11 -0000
            From: MAILER-DAEMON@mx.example.org
            To: bounces+def456@gw.example
            Subject: failure notice

            Hi. This is the qmail-send program at mx.example.org.
            I'm afraid I wasn't able to deliver your message to the following addresses.
            This is a permanent error; I've given up. Sorry it didn't work out.

            <someone@example.org>:
            198.51.100.20 does not like recipient.
            Remote host said: 550 5.1.1 <someone@example.org>... User unknown
            Giving up on 198.51.100.20.

            --- Below this line is a copy of the message.

            Return-Path: <bounces+def456@gw.example>
            From: Shop <shop@tenant-a.example>
            To: someone@example.org
            Subject: Your order

            Your order is delayed; we will retry shipping. Reference 4.2.2.
            """;
        var (findings, _) = Parse(qmail, "someone@example.org");

        var f = Assert.Single(findings);
        Assert.Equal(BounceKind.HardBounce, f.Kind);
        Assert.Equal("someone@example.org", f.Recipient);
        Assert.Equal("5.1.1", f.Status);
        Assert.Equal("Remote host said: 550 5.1.1 <someone@example.org>... User unknown", f.Diagnostic);
        Assert.Equal("mx.example.org", f.ReportingMta);
        Assert.Equal("heuristic", f.Format);
    }

    [Fact]
    public void Qmail_bounce_without_codes_is_decided_by_its_wording_not_by_our_quoted_message()
    {
        const string qmail = """
            From: MAILER-DAEMON@mx.example.org
            Subject: failure notice

            Hi. This is the qmail-send program at mx.example.org.
            I'm afraid I wasn't able to deliver your message to the following addresses.
            This is a permanent error; I've given up. Sorry it didn't work out.

            <someone@example.org>:
            Sorry, no mailbox here by that name. (#5.1.1)

            --- Below this line is a copy of the message.

            To: someone@example.org
            Subject: 451 4.3.0 try again later

            451 4.3.0 Temporary failure.
            """;
        var (findings, _) = Parse(qmail, "someone@example.org");

        var f = Assert.Single(findings);
        Assert.Equal(BounceKind.HardBounce, f.Kind);
        Assert.Equal("5.1.1", f.Status);
        Assert.Equal("Sorry, no mailbox here by that name. (#5.1.1)", f.Diagnostic);
    }

    [Fact]
    public void Exim_bounce_takes_the_code_next_to_our_recipient()
    {
        const string exim = """
            From: Mail Delivery System <Mailer-Daemon@mx.example.com>
            To: bounces+x1@gw.example
            Subject: Mail delivery failed: returning message to sender
            Auto-Submitted: auto-replied
            Content-Type: text/plain; charset=us-ascii

            This message was created automatically by mail delivery software.

            A message that you sent could not be delivered to one or more of its
            recipients. This is a permanent error. The following address(es) failed:

              other@example.com
                SMTP error from remote mail server after RCPT TO:<other@example.com>: 554 5.7.1 Relay access denied
              user@example.com
                SMTP error from remote mail server after RCPT TO:<user@example.com>: 550 5.1.1 <user@example.com>: Recipient address rejected: User unknown

            ------ This is a copy of the message, including all the headers. ------

            To: user@example.com, other@example.com
            Subject: hello
            """;
        var (findings, _) = Parse(exim, "user@example.com");

        var f = Assert.Single(findings);
        Assert.Equal(BounceKind.HardBounce, f.Kind);
        Assert.Equal("user@example.com", f.Recipient);
        Assert.Equal("5.1.1", f.Status);
        Assert.Equal("SMTP error from remote mail server after RCPT TO:<user@example.com>: 550 5.1.1 <user@example.com>: Recipient address rejected: User unknown", f.Diagnostic);
    }

    [Fact]
    public void Exim_delay_warning_is_a_soft_bounce()
    {
        const string exim = """
            From: Mail Delivery System <Mailer-Daemon@mx.example.com>
            Subject: Warning: message 1uAbCd-000123-Ef delayed 24 hours
            Content-Type: text/plain

            This message was created automatically by mail delivery software.
            A message that you sent has not yet been delivered to one or more of its
            recipients after more than 24 hours on the queue on mx.example.com.

            The address to which the message has not yet been delivered is:

              user@example.com
                host mx.example.com [203.0.113.5]: 451 4.7.1 Greylisted, try again later

            No action is required on your part. Delivery attempts will continue for
            some time, and this warning may be repeated at intervals if the message
            remains undelivered. Eventually the mail delivery software will give up,
            and when that happens, the message will be returned to you.
            """;
        var (findings, _) = Parse(exim, "user@example.com");

        var f = Assert.Single(findings);
        Assert.Equal(BounceKind.SoftBounce, f.Kind);
        Assert.Equal("user@example.com", f.Recipient);
        Assert.Equal("4.7.1", f.Status);
    }

    [Fact]
    public void Exchange_style_non_delivery_report()
    {
        const string ndr = """
            From: Microsoft Outlook <postmaster@contoso.com>
            To: bounces+q9@gw.example
            Subject: Undeliverable: Quarterly report
            MIME-Version: 1.0
            Content-Type: multipart/mixed; boundary="ndr"

            --ndr
            Content-Type: text/plain; charset="us-ascii"

            Delivery has failed to these recipients or groups:

            Jane.Doe@contoso.com<mailto:Jane.Doe@contoso.com>
            The email address you entered couldn't be found. Please check the recipient's email address and try to send the message again. If the problem continues, please contact your helpdesk.

            Diagnostic information for administrators:

            Generating server: EX01.contoso.com

            Jane.Doe@contoso.com
            #550 5.1.1 RESOLVER.ADR.RecipNotFound; not found ##

            Original message headers:

            To: Jane.Doe@contoso.com
            Subject: Quarterly report
            --ndr
            Content-Type: message/rfc822

            From: reports@tenant-a.example
            To: Jane.Doe@contoso.com
            Subject: Quarterly report

            body
            --ndr--
            """;
        var (findings, _) = Parse(ndr, "jane.doe@contoso.com");

        var f = Assert.Single(findings);
        Assert.Equal(BounceKind.HardBounce, f.Kind);
        Assert.Equal("Jane.Doe@contoso.com", f.Recipient);
        Assert.Equal("5.1.1", f.Status);
        Assert.Equal("#550 5.1.1 RESOLVER.ADR.RecipNotFound; not found ##", f.Diagnostic);
        Assert.Equal("EX01.contoso.com", f.ReportingMta);
    }

    [Fact]
    public void Text_bounce_naming_the_recipient_only_in_the_returned_message_uses_its_headers()
    {
        const string ndr = """
            From: postmaster@example.net
            Subject: Returned mail
            MIME-Version: 1.0
            Content-Type: multipart/mixed; boundary="x"

            --x
            Content-Type: text/html

            <p>Your message could <b>not</b> be delivered. The mailbox does not exist.</p>
            --x
            Content-Type: message/rfc822

            From: reports@tenant-a.example
            To: Nobody <nobody@example.net>
            Subject: hi

            body
            --x--
            """;
        var (findings, _) = Parse(ndr, "nobody@example.net");

        var f = Assert.Single(findings);
        Assert.Equal(BounceKind.HardBounce, f.Kind);
        Assert.Equal("nobody@example.net", f.Recipient);
        Assert.Null(f.Status);
    }

    [Fact]
    public void Auto_reply_is_unknown_even_with_numbers_in_it()
    {
        const string vacation = """
            From: Jane <jane@example.org>
            Subject: Out of office: Your order
            Auto-Submitted: auto-replied

            I am out of the office until 5.1.2025 and reply to jane@example.org mail
            after that. Call 550 123 456.
            """;
        var (findings, _) = Parse(vacation, "jane@example.org");

        var f = Assert.Single(findings);
        Assert.Equal(BounceKind.Unknown, f.Kind);
        Assert.Null(f.Status);
    }

    [Fact]
    public void Hostile_diagnostic_and_mta_are_sanitised_to_one_short_line()
    {
        var status = "Reporting-MTA: dns; evil.example\rX-Injected: 1\u0000\u001b[31m\n\n"
            + "Final-Recipient: rfc822; u@example.net\n"
            + "Action: failed\n"
            + "Status: 5.1.1\n"
            + "Diagnostic-Code: smtp; 550 5.1.1 bad\r\rX-Evil: yes\u0000\u0007\u001b[2J\u202Egnp.exe\u2028next\u200Bline\uD800 tail\n"
            + "   \r\nBcc: victim@example.org\n"
            + "\n"
            + "Final-Recipient: rfc822; long@example.net\n"
            + "Action: failed\n"
            + "Status: 5.0.0\n"
            + "Diagnostic-Code: smtp; " + new string('x', 3000) + "\n";
        var dsn = "From: MAILER-DAEMON@evil.example\r\nMIME-Version: 1.0\r\n"
            + "Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n"
            + "--b\r\nContent-Type: message/delivery-status\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + Convert.ToBase64String(Encoding.UTF8.GetBytes(status), Base64FormattingOptions.InsertLineBreaks)
            + "\r\n--b--\r\n";
        using var stream = new MemoryStream(Encoding.UTF8.GetBytes(dsn));
        var findings = BounceParser.Parse(stream, a => a == "u@example.net");

        Assert.Equal(2, findings.Count);
        var f = findings[0];
        Assert.Equal("u@example.net", f.Recipient);
        AssertOneLine(f.Diagnostic);
        AssertOneLine(f.ReportingMta);
        // CR/LF/U+2028 become spaces; NUL, BEL, ESC, RLO and zero-width space are dropped; the lone surrogate had
        // already become U+FFFD in UTF-8.
        Assert.Equal("550 5.1.1 bad X-Evil: yes[2Jgnp.exe nextline\uFFFD tail", f.Diagnostic);
        Assert.Equal("evil.example X-Injected: 1[31m", f.ReportingMta);
        Assert.Equal(BounceParser.MaxDiagnosticChars, findings[1].Diagnostic!.Length);
        AssertOneLine(findings[1].Diagnostic);
    }

    [Fact]
    public void Sanitize_drops_unpaired_surrogates_and_never_splits_a_pair()
    {
        Assert.Equal("a b", BounceParser.Sanitize("a\uD800\r\n\uDC00b", 10));
        Assert.Equal("ab", BounceParser.Sanitize("ab\U0001F600", 3));
        Assert.Equal("ab\U0001F600", BounceParser.Sanitize("ab\U0001F600", 4));
        Assert.Null(BounceParser.Sanitize(" \r\n\t\0 ", 10));
    }

    [Fact]
    public void ARF_without_a_feedback_type_is_not_a_complaint()
    {
        var (findings, _) = Parse(ArfComplete.Replace("Feedback-Type: abuse\n", "", StringComparison.Ordinal), "user@example.com");

        Assert.Equal(BounceKind.Unknown, Assert.Single(findings).Kind);
    }

    [Theory]
    [InlineData("")]
    [InlineData("\0\0\0\0")]
    [InlineData("not a message at all, just words")]
    [InlineData("Content-Type: multipart/report; report-type=delivery-status; boundary=\"z\"\r\n\r\n--z\r\nContent-Type: message/delivery-status\r\n\r\n::::\r\n\r\n;;;;\r\n--")]
    [InlineData("Content-Type: multipart/report; report-type=feedback-report; boundary=\"z\"\r\n\r\n--z\r\nContent-Type: message/feedback-report\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!!not base64\r\n")]
    [InlineData("Content-Type: multipart/mixed; boundary=\r\nContent-Type: text/plain; charset=x-no-such-charset\r\n\r\n\u00ff\u00fe@@@@.@")]
    [InlineData("From: <<<@@@>>>\r\nSubject: =?x-bogus?B?!!!?=\r\nContent-Type: message/rfc822\r\n\r\nTo: @@@,,,<>\r\n")]
    public void Malformed_input_never_throws_and_reports_nothing_actionable(string input)
    {
        var (findings, _) = Parse(input, "u@example.net");

        Assert.All(findings, f =>
        {
            Assert.Equal(BounceKind.Unknown, f.Kind);
            Assert.Null(f.Recipient);
        });
    }

    [Fact]
    public void Random_bytes_never_throw()
    {
        var random = new Random(1234);
        for (var i = 0; i < 200; i++)
        {
            var bytes = new byte[random.Next(0, 4096)];
            random.NextBytes(bytes);
            using var stream = new MemoryStream(bytes);
            var findings = BounceParser.Parse(stream, _ => true);
            Assert.All(findings, f => AssertOneLine(f.Diagnostic));
        }
    }

    [Fact]
    public void Exceptions_from_the_candidate_check_are_not_swallowed()
    {
        using var stream = new MemoryStream(Encoding.UTF8.GetBytes(PostfixDsn));
        Assert.Throws<InvalidOperationException>(() => BounceParser.Parse(stream, _ => throw new InvalidOperationException("caller bug")));
    }

    [Fact]
    public void Hundred_thousand_status_groups_are_cut_at_the_limit()
    {
        var sb = new StringBuilder("From: MAILER-DAEMON@bomb.example\r\nMIME-Version: 1.0\r\n"
            + "Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n"
            + "--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; bomb.example\r\n\r\n");
        for (var i = 0; i < 100_000; i++)
        {
            sb.Append("Final-Recipient: rfc822; r").Append(i).Append("@x.example\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n");
        }

        sb.Append("--b--\r\n");
        var calls = 0;
        var watch = Stopwatch.StartNew();
        using var stream = new MemoryStream(Encoding.ASCII.GetBytes(sb.ToString()));
        var findings = BounceParser.Parse(stream, _ =>
        {
            calls++;
            return false;
        });

        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(10), watch.Elapsed.ToString());
        Assert.Equal(BounceParser.MaxStatusGroups, findings.Count);
        Assert.True(calls <= BounceParser.MaxCandidates, $"{calls} calls");
        Assert.All(findings, f => Assert.Equal(BounceKind.HardBounce, f.Kind));
    }

    [Fact]
    public void Ten_MiB_of_addresses_is_read_only_up_to_the_limit()
    {
        var source = new EndlessStream("From: MAILER-DAEMON@bomb.example\r\nSubject: Undeliverable\r\n\r\n",
            "a-very-long-local-part-to-scan@example.com 550 5.1.1 x@y.example ");
        var calls = 0;
        var watch = Stopwatch.StartNew();
        var findings = BounceParser.Parse(source, a =>
        {
            calls++;
            return false;
        });

        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(10), watch.Elapsed.ToString());
        Assert.True(source.BytesRead <= BounceParser.MaxMessageBytes, $"{source.BytesRead} bytes read");
        Assert.True(calls <= BounceParser.MaxCandidates);
        var f = Assert.Single(findings);
        Assert.Null(f.Recipient);
        Assert.Equal(BounceKind.HardBounce, f.Kind);
    }

    [Fact]
    public void Distinct_address_flood_stops_asking_after_the_limit()
    {
        var sb = new StringBuilder("From: MAILER-DAEMON@bomb.example\r\nSubject: Undeliverable\r\n\r\n");
        for (var i = 0; sb.Length < 10 * 1024 * 1024; i++)
        {
            sb.Append('a', 100).Append(i).Append("@example.com\r\n");
        }

        sb.Append("target@example.net 550 5.1.1\r\n");
        var calls = 0;
        var watch = Stopwatch.StartNew();
        using var stream = new MemoryStream(Encoding.ASCII.GetBytes(sb.ToString()));
        var findings = BounceParser.Parse(stream, a =>
        {
            calls++;
            return a == "target@example.net";
        });

        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(10), watch.Elapsed.ToString());
        Assert.Equal(BounceParser.MaxCandidates, calls);
        Assert.Null(Assert.Single(findings).Recipient);
    }

    [Fact]
    public void Deeply_nested_multiparts_do_not_overflow_the_stack()
    {
        var sb = new StringBuilder("From: MAILER-DAEMON@bomb.example\r\nMIME-Version: 1.0\r\n");
        for (var i = 0; i < 20_000; i++)
        {
            sb.Append("Content-Type: multipart/mixed; boundary=\"b").Append(i).Append("\"\r\n\r\n--b").Append(i).Append("\r\n");
        }

        sb.Append("Content-Type: text/plain\r\n\r\nhello\r\n");
        using var stream = new MemoryStream(Encoding.ASCII.GetBytes(sb.ToString()));

        var findings = BounceParser.Parse(stream, _ => true);

        Assert.All(findings, f => Assert.Equal(BounceKind.Unknown, f.Kind));
    }

    [Theory]
    [InlineData("user@example.com", "user@example.com")]
    [InlineData("<User@Example.COM>", "User@Example.COM")]
    [InlineData("jörg@bücher.example", "jörg@bücher.example")]
    [InlineData("u@[192.0.2.1]", "u@[192.0.2.1]")]
    [InlineData("a b@example.com", null)]
    [InlineData("\"quoted\"@example.com", null)]
    [InlineData("user@localhost", null)]
    [InlineData("user@example..com", null)]
    [InlineData("user@example.com\r\nBcc: x@y.z", null)]
    [InlineData("Name <user@example.com>", null)]
    public void Plausible_address(string input, string? expected) => Assert.Equal(expected, BounceParser.PlausibleAddress(input));

    /// <summary>A message that never ends: a header, then <c>line</c> repeated forever.</summary>
    sealed class EndlessStream(string head, string line) : Stream
    {
        readonly byte[] _head = Encoding.ASCII.GetBytes(head);
        readonly byte[] _line = Encoding.ASCII.GetBytes(line);

        public long BytesRead { get; private set; }

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => BytesRead; set => throw new NotSupportedException(); }

        public override int Read(byte[] buffer, int offset, int count)
        {
            for (var i = 0; i < count; i++, BytesRead++)
            {
                buffer[offset + i] = BytesRead < _head.Length
                    ? _head[BytesRead]
                    : _line[(BytesRead - _head.Length) % _line.Length];
            }

            return count;
        }

        public override void Flush()
        {
        }

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}
