using System.Buffers;
using System.Text;
using FsCheck;
using FsCheck.Fluent;
using SmtpGateway.Bounces;
using SmtpGateway.Envelope;
using SmtpGateway.Identity;
using SmtpGateway.Smtp;

namespace SmtpGateway.Tests.Fuzz;

/// <summary>
/// Property-based fuzzing (FsCheck) of the parsers that see hostile input first: the SMTP command and path grammar, SASL
/// decoding, the header section split and header hygiene, and the bounce parser. Each property states something that can
/// fail: no exception beyond the documented ones, round trips where the grammar allows them, no control characters
/// leaking into what the parsers hand on. Iterations: <see cref="FuzzConfig"/>.
/// </summary>
public sealed class ParserProperties
{
    static readonly string[] VerbNames = ["HELO", "EHLO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "VRFY", "EXPN", "HELP", "STARTTLS", "AUTH", "BDAT"];

    static bool HasControl(string s) => s.Any(c => c < 0x20 || c == 0x7f);

    // ---- SMTP command line and paths (Smtp/SmtpGrammar.cs) ------------------------------------------------------------

    [Fact]
    public void Any_command_line_parses_without_throwing_and_the_argument_is_the_text_after_the_first_space() =>
        FuzzConfig.Check(Prop.ForAll(FuzzConfig.HostileString, line =>
        {
            var command = SmtpGrammar.ParseCommand(line);
            var space = line.IndexOf(' ');
            return command.Argument == (space < 0 ? "" : line[(space + 1)..])
                && (command.Verb != SmtpVerb.Unknown || !VerbNames.Contains(space < 0 ? line : line[..space], StringComparer.OrdinalIgnoreCase));
        }));

    [Fact]
    public void Every_verb_in_any_case_round_trips_with_its_argument()
    {
        var gen = Gen.Elements(VerbNames)
            .SelectMany(v => Gen.Elements(true, false).ArrayOf(v.Length), (v, upper) => new string([.. v.Select((c, i) => upper[i] ? c : char.ToLowerInvariant(c))]))
            .SelectMany(_ => FuzzConfig.HostileString.Generator, (verb, argument) => (verb, argument));
        FuzzConfig.Check(Prop.ForAll(gen.ToArbitrary(), x =>
        {
            var command = SmtpGrammar.ParseCommand($"{x.verb} {x.argument}");
            return command.Argument == x.argument && command.Verb.ToString().Equals(x.verb, StringComparison.OrdinalIgnoreCase);
        }));
    }

    [Fact]
    public void Any_path_argument_parses_or_is_refused_and_what_parses_is_bounded_and_free_of_control_characters()
    {
        var gen = FuzzConfig.HostileString.Generator.SelectMany(s => Gen.Elements("", "<", "<a@", "postmaster", "\"q\"@", "<@r:", "<\"").Select(p => p + s));
        FuzzConfig.Check(Prop.ForAll(gen.ToArbitrary(), tail =>
        {
            foreach (var (keyword, allowNull) in new[] { ("FROM:", true), ("TO:", false) })
            {
                var error = SmtpGrammar.TryParsePath(keyword + tail, keyword, allowNull, out var path);
                if ((error == PathError.None) != (path is not null))
                {
                    return false;
                }

                if (path is null)
                {
                    continue;
                }

                if (path.LocalPart.Length > 64 || path.Domain.Length > 255 || HasControl(path.Address)
                    || (path.IsNull && !allowNull) || path.Parameters.Keys.Any(k => k.Length == 0 || HasControl(k))
                    || path.Parameters.Values.Any(v => v is not null && (v.Contains(' ') || HasControl(v))))
                {
                    return false;
                }
            }

            return true;
        }));
    }

    [Fact]
    public void A_generated_mailbox_round_trips_through_mail_from_and_rcpt_to()
    {
        var gen = FuzzConfig.DotString.SelectMany(_ => FuzzConfig.Domain, (local, domain) => (local, domain))
            .SelectMany(_ => Gen.Elements("", " SIZE=1000", " BODY=8BITMIME SMTPUTF8", " AUTH=<>"), (m, p) => (m.local, m.domain, p))
            .SelectMany(_ => Gen.Elements("FROM:", "from:", "TO:", "To: "), (m, k) => (m.local, m.domain, m.p, k));
        FuzzConfig.Check(Prop.ForAll(gen.ToArbitrary(), x =>
        {
            var keyword = x.k.TrimEnd();
            var rcpt = keyword.Equals("TO:", StringComparison.OrdinalIgnoreCase);
            var parameters = rcpt ? "" : x.p;
            var error = SmtpGrammar.TryParsePath($"{x.k}<{x.local}@{x.domain}>{parameters}", keyword, allowNull: !rcpt, out var path);
            return error == PathError.None
                && path!.LocalPart == x.local && path.Domain == x.domain && path.Address == $"{x.local}@{x.domain}"
                && path.Parameters.Count == parameters.Split(' ', StringSplitOptions.RemoveEmptyEntries).Length
                && SmtpGrammar.IsHeloArgument(x.domain) == (x.domain.Length <= 255);
        }));
    }

    [Fact]
    public void A_quoted_local_part_round_trips_with_its_quotes_and_escapes()
    {
        // RFC 5321 section 4.1.2 Quoted-string: qtextSMTP or a quoted-pair of any printable ASCII.
        var piece = Gen.OneOf(
            Gen.Elements("abc XYZ09!#<>@,;:.()[]".ToCharArray()).Select(c => c.ToString()),
            Gen.Elements("\"\\ a<".ToCharArray()).Select(c => "\\" + c));
        var gen = Gen.Choose(1, 20).SelectMany(n => piece.ListOf(n)).Select(l => "\"" + string.Concat(l) + "\"")
            .SelectMany(_ => FuzzConfig.Domain, (local, domain) => (local, domain));
        FuzzConfig.Check(Prop.ForAll(gen.ToArbitrary(), x =>
        {
            var error = SmtpGrammar.TryParsePath($"TO:<{x.local}@{x.domain}>", "TO:", allowNull: false, out var path);
            return error == PathError.None && path!.LocalPart == x.local && path.Domain == x.domain;
        }));
    }

    [Fact]
    public void An_address_literal_round_trips_and_is_a_valid_helo_argument()
    {
        var gen = Gen.OneOf(
            Gen.Choose(0, 255).ArrayOf(4).Select(b => new System.Net.IPAddress([.. b.Select(x => (byte)x)]).ToString()),
            Gen.Choose(0, 255).ArrayOf(16).Select(b => "IPv6:" + new System.Net.IPAddress([.. b.Select(x => (byte)x)]).ToString()));
        FuzzConfig.Check(Prop.ForAll(gen.ToArbitrary(), literal =>
        {
            var error = SmtpGrammar.TryParsePath($"TO:<user@[{literal}]>", "TO:", allowNull: false, out var path);
            return error == PathError.None && path!.Domain == $"[{literal}]" && SmtpGrammar.IsHeloArgument($"[{literal}]");
        }));
    }

    [Fact]
    public void Any_helo_argument_is_judged_without_throwing_and_what_passes_has_no_space_or_control_character() =>
        FuzzConfig.Check(Prop.ForAll(FuzzConfig.HostileString, argument =>
            !SmtpGrammar.IsHeloArgument(argument) || (!HasControl(argument) && !argument.Contains(' ') && argument.Length <= 255)));

    // ---- SASL (Identity/Sasl.cs) --------------------------------------------------------------------------------------

    [Fact]
    public void Any_sasl_response_decodes_or_is_refused_with_one_of_the_documented_replies() =>
        FuzzConfig.Check(Prop.ForAll(FuzzConfig.HostileString, response =>
        {
            var decoded = Sasl.Decode(response, out var failure);
            return decoded is null
                ? failure == SmtpReplies.InvalidBase64 || (failure == SmtpReplies.AuthCancelled && response == "*")
                : failure is null;
        }));

    [Fact]
    public void Base64_of_any_octets_decodes_to_exactly_those_octets_or_is_refused_as_not_utf8() =>
        FuzzConfig.Check(Prop.ForAll(FuzzConfig.HostileBytes, bytes =>
        {
            var decoded = Sasl.Decode(Convert.ToBase64String(bytes), out var failure);
            if (decoded is null)
            {
                // Only the empty response (RFC 4954: "=" stands for it) and invalid UTF-8 are refused.
                return failure == SmtpReplies.InvalidBase64 && (bytes.Length == 0 || !System.Text.Unicode.Utf8.IsValid(bytes));
            }

            return Encoding.UTF8.GetBytes(decoded).AsSpan().SequenceEqual(bytes);
        }));

    [Fact]
    public void Plain_credentials_round_trip_through_base64_and_the_nul_split()
    {
        var text = FuzzConfig.HostileString.Generator.Select(s => Encoding.UTF8.GetString(Encoding.UTF8.GetBytes(s)).Replace("\0", "", StringComparison.Ordinal));
        var gen = text.Three();
        FuzzConfig.Check(Prop.ForAll(gen.ToArbitrary(), x =>
        {
            var (authzid, user, password) = x;
            var response = Convert.ToBase64String(Encoding.UTF8.GetBytes($"{authzid}\0{user}\0{password}"));
            var decoded = Sasl.Decode(response, out _);
            return decoded is not null && Sasl.ParsePlain(decoded) == (authzid, user, password);
        }));
    }

    // ---- Header section and hygiene (Envelope/HeaderSection.cs, HeaderHygiene.cs) --------------------------------------

    [Fact]
    public void Any_octets_split_into_fields_that_together_are_exactly_the_section() =>
        FuzzConfig.Check(Prop.ForAll(FuzzConfig.HostileBytes, bytes =>
        {
            var section = HeaderSection.Parse(bytes, out var consumed);
            var joined = section.ToSequence().ToArray();
            return consumed >= 0 && consumed <= bytes.Length
                && joined.AsSpan().SequenceEqual(bytes.AsSpan(0, consumed))
                && section.Fields.All(f => HeaderSection.IsFieldStart(f.Raw.Span[..Math.Max(0, f.Raw.Span.IndexOfAny("\r\n"u8) is var e and >= 0 ? e : f.Raw.Length)]));
        }));

    /// <summary>Header fields a client might send: ordinary ones, the ones hygiene strips (any case, obsolete WSP before the
    /// colon), folded values, and stray octets.</summary>
    static readonly Gen<string> FieldGen =
        Gen.Elements("From", "To", "Subject", "Message-ID", "Received", "Return-Path", "return-path", "X-Tenant", "X-Tenant-Id", "x-smtpgw-route",
                "Bcc", "BCC", "Resent-Bcc", "X-Other", "X-Smtpgateway", "Content-Type")
            .SelectMany(_ => Gen.Elements("", " ", "\t", "  "), (name, wsp) => name + wsp)
            .SelectMany(_ => Gen.Elements("x", " value", " a,\r\n b", " folded\r\n\tmore\r\n  lines", " \u00e9\u00ff", ""), (head, value) => $"{head}:{value}\r\n");

    [Fact]
    public void Hygiene_output_is_a_header_section_without_the_stripped_fields_that_reparses_to_itself()
    {
        var hygiene = new HeaderHygiene(new HeaderHygieneOptions { StripHeaders = ["X-Other", "X-Smtpgw-*"] });
        var gen = Gen.Choose(0, 30).SelectMany(n => FieldGen.ListOf(n)).SelectMany(_ => Gen.Elements(true, false), (fields, outbound) => (fields, outbound));
        FuzzConfig.Check(Prop.ForAll(gen.ToArbitrary(), x =>
        {
            var input = Encoding.Latin1.GetBytes(string.Concat(x.fields) + "\r\nbody\r\n");
            var section = HeaderSection.Parse(input, out _);
            var outcome = hygiene.Clean(section, x.outbound);
            var output = outcome.Section.ToSequence().ToArray();
            var reparsed = HeaderSection.Parse(output, out var consumed);
            string[] stripped = ["return-path", "x-other"];
            string[] prefixes = ["x-tenant", "x-smtpgateway", "x-smtpgw"];
            var names = outcome.Section.Fields.Select(f => f.Name).ToList();
            return consumed == output.Length
                && reparsed.Fields.Select(f => f.Name).SequenceEqual(names)
                && output.AsSpan().EndsWith(names.Count == 0 ? "\r\n"u8 : "\r\n\r\n"u8)
                && !HasBareLineEnding(output)
                && !names.Any(n => stripped.Contains(n) || prefixes.Any(p => n.StartsWith(p, StringComparison.Ordinal)))
                && (!x.outbound || !names.Any(n => n is "bcc" or "resent-bcc"))
                && outcome.RemovedFields == section.Fields.Count - outcome.Section.Fields.Count;
        }));
    }

    static bool HasBareLineEnding(ReadOnlySpan<byte> s)
    {
        for (var i = 0; i < s.Length; i++)
        {
            if ((s[i] == '\r' && (i + 1 >= s.Length || s[i + 1] != '\n')) || (s[i] == '\n' && (i == 0 || s[i - 1] != '\r')))
            {
                return true;
            }
        }

        return false;
    }

    // ---- Bounce parser (Bounces/BounceParser.cs) ----------------------------------------------------------------------

    static void AssertPrintableLine(string? value)
    {
        if (value is not null && (value.Any(char.IsControl) || value.Contains('\u2028') || value.Contains('\u2029')))
        {
            throw new InvalidOperationException($"a control character or line break left the bounce parser: {Uri.EscapeDataString(value)}");
        }
    }

    static bool CheckFindings(IReadOnlyList<BounceFinding> findings)
    {
        foreach (var f in findings)
        {
            foreach (var value in new[] { f.Recipient, f.Status, f.Diagnostic, f.ReportingMta, f.FeedbackType, f.Format })
            {
                AssertPrintableLine(value);
            }

            if (f.Diagnostic is { Length: > BounceParser.MaxDiagnosticChars })
            {
                return false;
            }
        }

        return true;
    }

    [Fact]
    public void Any_octets_at_a_return_path_parse_without_throwing_into_one_line_printable_findings() =>
        FuzzConfig.Check(Prop.ForAll(FuzzConfig.HostileBytes, bytes =>
            CheckFindings(BounceParser.Parse(new MemoryStream(bytes), _ => true))));

    [Fact]
    public void A_generated_dsn_reports_its_recipient_and_status_whatever_the_diagnostic_text_holds()
    {
        // The parser takes an address for one only with a dot in its domain (a heuristic against text that merely has an "@").
        var domain = FuzzConfig.Domain.SelectMany(_ => Gen.Elements("net", "example", "org"), (d, tld) => $"{d}.{tld}");
        var gen = FuzzConfig.DotString.SelectMany(_ => domain, (l, d) => $"{l}@{d}".ToLowerInvariant())
            .SelectMany(_ => Gen.Choose(0, 7).Two(), (rcpt, st) => (rcpt, status: $"5.{st.Item1}.{st.Item2}"))
            .SelectMany(_ => FuzzConfig.HostileString.Generator, (x, diag) => (x.rcpt, x.status, diag));
        FuzzConfig.Check(Prop.ForAll(gen.ToArbitrary(), x =>
        {
            // The diagnostic is hostile text folded into the field (no bare CR/LF of its own, or it would end the field).
            var diag = string.Concat(x.diag.Where(c => c is not ('\r' or '\n') && !char.IsSurrogate(c)));
            var message = $"""
                From: MAILER-DAEMON@mx.example.net
                To: b+x@bounces.example
                MIME-Version: 1.0
                Content-Type: multipart/report; report-type=delivery-status; boundary="B"

                --B
                Content-Type: text/plain

                failed
                --B
                Content-Type: message/delivery-status

                Reporting-MTA: dns; mx.example.net

                Final-Recipient: rfc822; {x.rcpt}
                Action: failed
                Status: {x.status}
                Diagnostic-Code: smtp; 550 {diag}

                --B--

                """.ReplaceLineEndings("\r\n");
            var findings = BounceParser.Parse(new MemoryStream(Encoding.UTF8.GetBytes(message)), a => a.Equals(x.rcpt, StringComparison.OrdinalIgnoreCase));
            return CheckFindings(findings)
                && findings.Any(f => f.Kind == BounceKind.HardBounce && f.Status == x.status && string.Equals(f.Recipient, x.rcpt, StringComparison.OrdinalIgnoreCase));
        }));
    }
}
