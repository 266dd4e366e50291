// DKIM signing micro-benchmark: where does the CPU of one signed 4 KiB message go?
//
//   dotnet run -c Release --project perf/SmtpGateway.SignBench -- [--rounds N] [--ms N] [--only a,b] [--label X] [--tsv FILE]
//   ... --ops N: no timing; each selected case runs 20 times, then exactly N times (for `strace -f -c`: two runs with
//   different N differ by exactly that many operations, so the difference of their counts is syscalls per operation)
//
// Sets up a SoftHSM2 token in a temp directory the way the tests do (SoftHsmSetup.Configure, EnsureToken,
// Pkcs11Hsm.GenerateKeyPair), then times each case in rounds of ~--ms milliseconds and prints the median over the
// rounds of the thread's CPU µs/op (with the quartiles), the median wall µs/op, and managed bytes allocated per op.
// Uses only the gateway's public API, so compare.sh can build the same file against another commit (before/after).
// See README.md for the cases.
using System.Buffers;
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using MimeKit;
using MimeKit.Cryptography;
using SmtpGateway.SignBench;
using Net.Pkcs11Interop.Common;
using Net.Pkcs11Interop.HighLevelAPI;
using SmtpGateway.Audit;
using SmtpGateway.Diagnostics;
using SmtpGateway.Hsm;
using SmtpGateway.Signing;

var rounds = 15;
var roundMs = 150;
string? only = null;
var label = "current";
string? tsv = null;
var ops = 0;
for (var i = 0; i < args.Length; i++)
{
    switch (args[i])
    {
        case "--rounds": rounds = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
        case "--ms": roundMs = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
        case "--only": only = args[++i]; break;
        case "--label": label = args[++i]; break;
        case "--tsv": tsv = args[++i]; break;
        case "--ops": ops = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
        default: Console.Error.WriteLine($"unknown argument {args[i]}"); return 2;
    }
}

var bench = new Bench(rounds, roundMs, only, label, tsv, ops);
var dir = Directory.CreateTempSubdirectory("smtpgw-signbench");
try
{
    return bench.Run(dir.FullName);
}
finally
{
    dir.Delete(recursive: true);
    if (Directory.Exists(TenantHsmTokens.DefaultPinDirectory(dir.FullName)))
    {
        Directory.Delete(TenantHsmTokens.DefaultPinDirectory(dir.FullName), recursive: true);
    }

}

sealed class Bench(int rounds, int roundMs, string? only, string label, string? tsv, int ops)
{
    const string Tenant = "bench";
    const string TokenLabel = "smtpgw-bench";
    const string Domain = "tenant-a.example";
    const string RsaKey = "dkim-bench-rsa";
    const string EdKey = "dkim-bench-ed25519";
    const string MacKey = "smtpgw-token-bench";
    const string KekKey = "smtpgw-vault-kek-1";

    readonly List<string> _rows = [];

    public int Run(string dataDir)
    {
        var pin = "bench-" + Convert.ToHexString(RandomNumberGenerator.GetBytes(6));
        var setup = SoftHsmSetup.Configure(dataDir);
        setup.EnsureToken(TokenLabel, "so-" + pin, pin);
        // The default PIN file, <data>.pins/<tenant>.pin, as `smtpgw hsm init-token` writes it (0600 in a 0700 directory).
        var pinDir = TenantHsmTokens.DefaultPinDirectory(dataDir);
        Directory.CreateDirectory(pinDir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        File.WriteAllText(Path.Combine(pinDir, Tenant + ".pin"), pin);
        File.SetUnixFileMode(Path.Combine(pinDir, Tenant + ".pin"), UnixFileMode.UserRead | UnixFileMode.UserWrite);
        var token = new HsmTenantToken(Tenant, TokenLabel, HsmPin.FromString(pin));

        HsmPublicKey rsaPublic, edPublic;
        using (var keygen = new Pkcs11Hsm(new Pkcs11HsmOptions()))
        {
            rsaPublic = keygen.GenerateKeyPair(token, RsaKey, DkimKeyAlgorithm.Rsa2048);
            edPublic = keygen.GenerateKeyPair(token, EdKey, DkimKeyAlgorithm.Ed25519);
        }

        var now = new DateTimeOffset(2026, 11, 28, 12, 0, 0, TimeSpan.Zero);
        var rsa = new DkimSelector(Domain, "r1", DkimAlgorithm.Rsa2048, SelectorState.Active, RsaKey, Convert.ToBase64String(rsaPublic.Value), now, null);
        var ed = new DkimSelector(Domain, "e1", DkimAlgorithm.Ed25519, SelectorState.Active, EdKey, Convert.ToBase64String(edPublic.Value), now, null);
        var message = Message.Build(4096);
        var messageBytes = message.ToArray();
        var headerData = Encoding.ASCII.GetBytes(Message.CanonicalHeaderSample);
        var headerDigest = SHA256.HashData(headerData);
        Console.WriteLine($"# {label}: {Environment.ProcessorCount} cores, .NET {Environment.Version}, message {messageBytes.Length} bytes, {rounds} rounds of ~{roundMs} ms per case");
        Console.WriteLine($"{"case",-22} {"cpu µs/op",10} {"p25",9} {"p75",9} {"wall µs/op",10} {"alloc B/op",11}");

        // (c) the token's C_SignInit + C_Sign alone, through Pkcs11Interop directly (the module is loaded only here,
        // so nothing of the gateway's own is timed): the two RSA mechanisms the gateway can choose between.
        RawPkcs11(token, pin, headerData, headerDigest);

        // (a) parsing.
        var segment = Message.Segment(message);
        Cases(
            ("load.copy", () =>
            {
                using var stream = new MemoryStream(message.ToArray(), writable: false);
                GC.KeepAlive(MimeMessage.Load(ParserOptions.Default, stream));
            }),
            ("load.nocopy", () =>
            {
                using var stream = new MemoryStream(segment.Array!, segment.Offset, segment.Count, writable: false);
                GC.KeepAlive(MimeMessage.Load(ParserOptions.Default, stream));
            }),
            ("load.persistent", () =>
            {
                using var stream = new MemoryStream(segment.Array!, segment.Offset, segment.Count, writable: false);
                GC.KeepAlive(MimeMessage.Load(ParserOptions.Default, stream, persistent: true));
            }));

        // (b) MimeKit's DkimSigner without the HSM: canonicalisation, body hash, tags, on an already parsed message.
        var dummy = new DummyKeys();
        var parsed = MimeMessage.Load(new MemoryStream(messageBytes));
        string[] fields = ["from", "from", "to", "to", "subject", "subject", "date", "date", "message-id", "message-id", "mime-version", "mime-version", "content-type", "content-type"];
        var fixedTime = new FixedTime(now);
        Action Dkim(DkimSelector selector) => () =>
        {
            new HsmDkimSigner(dummy, Tenant, selector, fixedTime, null).Sign(parsed, fields);
            parsed.Headers.RemoveAt(0);
        };
        Cases(("dkim.rsa.nohsm", Dkim(rsa)), ("dkim.ed.nohsm", Dkim(ed)));

        // The DKIM body hash as the listener feeds it: one call per body line (without its CRLF), then Finish.
        var bodyStart = messageBytes.AsSpan().IndexOf("\r\n\r\n"u8) + 4;
        var bodyLines = new List<byte[]>();
        for (var at = bodyStart; at < messageBytes.Length;)
        {
            var end = messageBytes.AsSpan(at).IndexOf("\r\n"u8);
            end = end < 0 ? messageBytes.Length : at + end;
            bodyLines.Add(messageBytes[at..end]);
            at = end + 2;
        }

        Cases(("bodyhash", () =>
        {
            using var hash = new DkimBodyHash();
            foreach (var line in bodyLines)
            {
                hash.AppendLine(line);
            }

            GC.KeepAlive(hash.Finish());
        }));

        var audit = new NullAudit();
        var stores = new Dictionary<string, DkimKeyStore>();
        foreach (var (name, selectors) in new[] { ("rsa", new[] { rsa }), ("ed", new[] { ed }), ("both", new[] { rsa, ed }) })
        {
            var store = new DkimKeyStore(Path.Combine(dataDir, "store-" + name));
            store.Save(Tenant, selectors);
            stores[name] = store;
        }

        // (d) without the HSM: the whole DkimSigningService.Sign with a key signer that returns a constant. Before/after a
        // change is compare.sh's job (it builds HEAD from `git archive` and runs both builds alternately).
        Cases([.. stores.Select(s =>
        {
            var service = new DkimSigningService(s.Value, dummy, audit, fixedTime, null);
            return ($"svc.{s.Key}.nohsm", (Action)(() => service.Sign(Tenant, "app@" + Domain, message, "s1", signingRequired: true)));
        })]);

        using var hsm = new Pkcs11Hsm(new Pkcs11HsmOptions());
        hsm.Connect(token);

        // (c) the gateway's IHsm.Sign: session pool, cached handle, mechanism, C_SignInit + C_Sign.
        Cases(
            ("hsm.rsa", () => hsm.Sign(token, RsaKey, DkimKeyAlgorithm.Rsa2048, headerData)),
            ("hsm.ed", () => hsm.Sign(token, EdKey, DkimKeyAlgorithm.Ed25519, headerDigest)),
            ("hsm.both", () =>
            {
                hsm.Sign(token, RsaKey, DkimKeyAlgorithm.Rsa2048, headerData);
                hsm.Sign(token, EdKey, DkimKeyAlgorithm.Ed25519, headerDigest);
            }));

        // HMAC-SHA256 in the token (session-token and VERP keys, issue 11) over a ~100-byte input, the size of a token's
        // signed fields or a return path's: the raw IHsm call, the production path through HsmTenantKeys (tenant → token
        // and PIN resolution from the cache), and the same HMAC in process for scale.
        var macInput = Encoding.ASCII.GetBytes("smtpgw-token\0bench\0k1\0app@tenant-a.example\01795780800\0" + new string('n', 48));
        var macSecret = RandomNumberGenerator.GetBytes(32);
        if (!hsm.HasSecretKey(token, MacKey))
        {
            hsm.ImportHmacKey(token, MacKey, macSecret);
        }

        var tenantKeys = new HsmTenantKeys(hsm, new TenantHsmTokens(dataDir, () => SmtpGateway.Identity.TenantSnapshot.Empty));
        if (!tenantKeys.Mac(Tenant, MacKey, macInput).AsSpan().SequenceEqual(HMACSHA256.HashData(macSecret, macInput)))
        {
            throw new InvalidOperationException("CKM_SHA256_HMAC in the token differs from HMACSHA256");
        }

        Cases(
            ("hmac.hsm", () => hsm.Hmac(token, MacKey, macInput)),
            ("hmac.keys", () => tenantKeys.Mac(Tenant, MacKey, macInput)),
            ("hmac.managed", () => HMACSHA256.HashData(macSecret, macInput)));

        // AES-256-GCM in the token (the vault's key-encryption key) over a 32-byte data key, as the vault unseals it.
        if (!hsm.HasSecretKey(token, KekKey))
        {
            hsm.GenerateSecretKey(token, KekKey, HsmSecretKeyType.Aes256);
        }

        var dataKey = RandomNumberGenerator.GetBytes(32);
        var kekAad = Encoding.ASCII.GetBytes("smtpgw-vault-dek\0bench\0" + KekKey);
        var sealedKey = hsm.Seal(token, KekKey, dataKey, kekAad);
        Cases(
            ("kek.seal", () => hsm.Seal(token, KekKey, dataKey, kekAad)),
            ("kek.open", () => CryptographicOperations.ZeroMemory(hsm.Open(token, KekKey, sealedKey, kekAad))));

        // Concurrency: process CPU per signature with 1, 2 and 8 threads signing at once (the listener signs on
        // many sessions' threads; SoftHSM2 and OpenSSL 3 take locks inside C_Sign).
        foreach (var (name, algorithm, key, data) in new[] { ("conc.rsa", DkimKeyAlgorithm.Rsa2048, RsaKey, headerData), ("conc.ed", DkimKeyAlgorithm.Ed25519, EdKey, headerDigest) })
        {
            if (only is not null && !only.Split(',').Any(o => name.StartsWith(o, StringComparison.Ordinal)))
            {
                continue;
            }

            foreach (var threads in new[] { 1, 2, 4, 8 })
            {
                var results = new List<(double Cpu, double Wall)>();
                for (var r = 0; r < Math.Max(3, rounds / 3); r++)
                {
                    var count = 0L;
                    var stop = false;
                    var cpu0 = Process.GetCurrentProcess().TotalProcessorTime;
                    var sw = Stopwatch.StartNew();
                    var workers = Enumerable.Range(0, threads).Select(_ => new Thread(() =>
                    {
                        while (!Volatile.Read(ref stop))
                        {
                            hsm.Sign(token, key, algorithm, data);
                            Interlocked.Increment(ref count);
                        }
                    })).ToList();
                    workers.ForEach(w => w.Start());
                    Thread.Sleep(roundMs * 3);
                    Volatile.Write(ref stop, true);
                    workers.ForEach(w => w.Join());
                    var cpu = (Process.GetCurrentProcess().TotalProcessorTime - cpu0).TotalMicroseconds;
                    results.Add((cpu / count, sw.Elapsed.TotalMicroseconds / count));
                }

                var cpuMedian = results.Select(x => x.Cpu).Order().ElementAt(results.Count / 2);
                var wallMedian = results.Select(x => x.Wall).Order().ElementAt(results.Count / 2);
                Console.WriteLine($"{name + ".t" + threads,-22} {cpuMedian,10:F1} {"",9} {"",9} {wallMedian,10:F1} {"",11}");
            }
        }

        // (d) the full path.
        var keys = new HsmKeySigner(hsm, new TenantHsmTokens(dataDir, () => SmtpGateway.Identity.TenantSnapshot.Empty));
        // The key signer alone (tenant → token and PIN, the Ed25519 pre-hash, IHsm.Sign) for both keys, against hsm.both.
        Cases(
            ("keys.both", () =>
            {
                keys.Sign(Tenant, rsa, headerData);
                keys.Sign(Tenant, ed, headerData);
            }));
        var outputs = new Dictionary<string, byte[]>();
        Cases([.. stores.SelectMany(s =>
        {
            var service = new DkimSigningService(s.Value, keys, audit, fixedTime, null);
            outputs[s.Key] = service.Sign(Tenant, "app@" + Domain, message, "s1", signingRequired: true);
            return new[] { ($"svc.{s.Key}", (Action)(() => service.Sign(Tenant, "app@" + Domain, message, "s1", signingRequired: true))) };
        })]);

        // Sanity: what the full path produced verifies (MimeKit's verifier here; the tests run python3-dkim too).
        var signed = outputs["both"].Concat(messageBytes).ToArray();
        var check = MimeMessage.Load(new MemoryStream(signed));
        var verifier = new DkimVerifier(new Locator(new() { ["r1"] = rsaPublic, ["e1"] = edPublic }));
        verifier.Enable(DkimSignatureAlgorithm.Ed25519Sha256);
        var verified = check.Headers.Where(h => h.Id == HeaderId.DkimSignature).Select(h => verifier.Verify(check, h)).ToList();
        Console.WriteLine($"# verify (MimeKit): {string.Join(", ", verified)}; both-signature headers sha256 {Convert.ToHexString(SHA256.HashData(outputs["both"]))[..16]}");
        if (tsv is not null)
        {
            File.AppendAllLines(tsv, _rows);
        }

        return verified.Count == 2 && verified.All(v => v) ? 0 : 1;
    }

    void RawPkcs11(HsmTenantToken token, string pin, byte[] headerData, byte[] headerDigest)
    {
        if (only is not null && !only.Split(',').Any(o => "raw.".StartsWith(o, StringComparison.Ordinal) || o.StartsWith("raw.", StringComparison.Ordinal)))
        {
            return;
        }

        var factories = new Pkcs11InteropFactories();
        using var library = factories.Pkcs11LibraryFactory.LoadPkcs11Library(factories, SoftHsmSetup.DefaultModulePath, AppType.MultiThreaded);
        var slot = library.GetSlotList(SlotsType.WithTokenPresent).Single(s => s.GetTokenInfo().Label == token.TokenLabel);
        using var session = slot.OpenSession(SessionType.ReadWrite);
        session.Login(CKU.CKU_USER, Encoding.UTF8.GetBytes(pin));
        IObjectHandle Find(string keyLabel) => session.FindAllObjects(
            [factories.ObjectAttributeFactory.Create(CKA.CKA_CLASS, CKO.CKO_PRIVATE_KEY), factories.ObjectAttributeFactory.Create(CKA.CKA_LABEL, keyLabel)]).Single();
        var rsaKey = Find(RsaKey);
        var edKey = Find(EdKey);
        using var sha256Rsa = factories.MechanismFactory.Create(CKM.CKM_SHA256_RSA_PKCS);
        using var rsaPkcs = factories.MechanismFactory.Create(CKM.CKM_RSA_PKCS);
        using var eddsa = factories.MechanismFactory.Create(0x1057UL); // CKM_EDDSA
        byte[] digestInfoPrefix = [0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20];
        byte[] DigestInfo() => [.. digestInfoPrefix, .. SHA256.HashData(headerData)];
        if (!session.Sign(sha256Rsa, rsaKey, headerData).AsSpan().SequenceEqual(session.Sign(rsaPkcs, rsaKey, DigestInfo())))
        {
            throw new InvalidOperationException("CKM_RSA_PKCS over the DigestInfo differs from CKM_SHA256_RSA_PKCS");
        }

        Cases(
            ("raw.rsa.sha256rsa", () => session.Sign(sha256Rsa, rsaKey, headerData)),
            ("raw.rsa.pkcs+digest", () => session.Sign(rsaPkcs, rsaKey, DigestInfo())),
            ("raw.ed.eddsa", () => session.Sign(eddsa, edKey, headerDigest)));
        session.Logout();
    }

    void Case(string name, Action op) => Cases((name, op));

    /// <summary>
    /// Times the cases in interleaved rounds (round r runs each case in turn), so cases compared with each other
    /// see the same machine noise. Median µs/op over the rounds, quartiles, and bytes allocated per op.
    /// </summary>
    void Cases(params (string Name, Action Op)[] all)
    {
        var cases = all.Where(c => only is null || only.Split(',').Any(o => c.Name.StartsWith(o, StringComparison.Ordinal))).ToArray();
        if (cases.Length == 0)
        {
            return;
        }

        if (ops > 0)
        {
            // A fixed number of operations and nothing timed, so syscall counts of two runs can be subtracted.
            foreach (var (name, op) in cases)
            {
                for (var i = 0; i < 20 + ops; i++)
                {
                    op();
                }

                Console.WriteLine($"{name,-22} ran {ops} times after 20 warm-up runs");
            }

            return;
        }

        // Warm-up until tiered compilation is done with these cases: no method compiled for 1 s (at most 20 s). A fixed
        // 300 ms left PGO's instrumented tier in place for most rounds: svc.both.nohsm measured 47 µs, 15 once optimised.
        var warmup = Stopwatch.StartNew();
        var compiled = System.Runtime.JitInfo.GetCompiledMethodCount();
        var quietSince = 0L;
        while (warmup.ElapsedMilliseconds - quietSince < 1000 && warmup.ElapsedMilliseconds < 20_000)
        {
            foreach (var (_, op) in cases)
            {
                op();
            }

            if (System.Runtime.JitInfo.GetCompiledMethodCount() is var now && now != compiled)
            {
                compiled = now;
                quietSince = warmup.ElapsedMilliseconds;
            }
        }

        // Then size a round to ~roundMs per case.
        var perRound = new int[cases.Length];
        for (var c = 0; c < cases.Length; c++)
        {
            var sw = Stopwatch.StartNew();
            var warm = 0;
            while (sw.ElapsedMilliseconds < Math.Max(300, roundMs) || warm < 20)
            {
                cases[c].Op();
                warm++;
            }

            perRound[c] = Math.Max(5, (int)(warm * (double)roundMs / sw.ElapsedMilliseconds));
        }

        var perOp = new double[cases.Length, rounds];
        var cpuPerOp = new double[cases.Length, rounds];
        var allocated = new long[cases.Length];
        for (var r = 0; r < rounds; r++)
        {
            for (var c = 0; c < cases.Length; c++)
            {
                var op = cases[c].Op;
                var before = GC.GetAllocatedBytesForCurrentThread();
                // The calling thread's CPU: workstation GC collects on the allocating thread and the PKCS#11 module signs on it.
                var cpu = ThreadCpuTime.Nanoseconds() / 1e3;
                var start = Stopwatch.GetTimestamp();
                for (var i = 0; i < perRound[c]; i++)
                {
                    op();
                }

                perOp[c, r] = Stopwatch.GetElapsedTime(start).TotalMicroseconds / perRound[c];
                cpuPerOp[c, r] = ((ThreadCpuTime.Nanoseconds() / 1e3) - cpu) / perRound[c];
                allocated[c] += GC.GetAllocatedBytesForCurrentThread() - before;
            }
        }

        for (var c = 0; c < cases.Length; c++)
        {
            var sorted = Enumerable.Range(0, rounds).Select(r => cpuPerOp[c, r]).Order().ToArray();
            var median = sorted[rounds / 2];
            var wall = Enumerable.Range(0, rounds).Select(r => perOp[c, r]).Order().ElementAt(rounds / 2);
            var bytes = allocated[c] / ((long)rounds * perRound[c]);
            Console.WriteLine($"{cases[c].Name,-22} {median,10:F1} {sorted[rounds / 4],9:F1} {sorted[rounds * 3 / 4],9:F1} {wall,10:F1} {bytes,11}");
            _rows.Add(string.Join('\t', label, cases[c].Name, median.ToString("F2", CultureInfo.InvariantCulture), wall.ToString("F2", CultureInfo.InvariantCulture),
                bytes.ToString(CultureInfo.InvariantCulture), sorted[rounds / 4].ToString("F2", CultureInfo.InvariantCulture)));
        }
    }

    sealed class DummyKeys : IDkimKeySigner
    {
        readonly byte[] _rsa = new byte[256];
        readonly byte[] _ed = new byte[64];

        public byte[] Sign(string tenantId, DkimSelector selector, byte[] data) => selector.Algorithm == DkimAlgorithm.Ed25519 ? _ed : _rsa;
    }

    sealed class NullAudit : IAuditLog
    {
        public void Write(AuditEvent auditEvent)
        {
        }
    }

    sealed class FixedTime(DateTimeOffset now) : TimeProvider
    {
        public override DateTimeOffset GetUtcNow() => now;
    }

    sealed class Locator(Dictionary<string, HsmPublicKey> keys) : DkimPublicKeyLocatorBase
    {
        public override Org.BouncyCastle.Crypto.AsymmetricKeyParameter LocatePublicKey(string methods, string domain, string selector, CancellationToken cancellationToken = default)
        {
            var key = keys[selector];
            return GetPublicKey($"v=DKIM1; k={(key.Algorithm == DkimKeyAlgorithm.Ed25519 ? "ed25519" : "rsa")}; p={Convert.ToBase64String(key.Value)}");
        }

        public override Task<Org.BouncyCastle.Crypto.AsymmetricKeyParameter> LocatePublicKeyAsync(string methods, string domain, string selector, CancellationToken cancellationToken = default) =>
            Task.FromResult(LocatePublicKey(methods, domain, selector, cancellationToken));
    }
}

/// <summary>
/// The message the load generator sends (perf/SmtpGateway.LoadGen MessageBody), handed to the signer the way the
/// listener does: a slice of a pooled 64 KiB chunk after the Received header (one segment for a 4 KiB message).
/// </summary>
static class Message
{
    public const string CanonicalHeaderSample =
        "from:<app@tenant-a.example>\r\nto:<x@example.net>\r\nsubject:bench run 1234\r\ndate:Sat, 28 Nov 2026 12:00:00 +0000\r\n" +
        "message-id:<1234.run@loadgen.bench>\r\nmime-version:1.0\r\ncontent-type:text/plain; charset=us-ascii\r\n" +
        "dkim-signature:v=1; a=rsa-sha256; d=tenant-a.example; s=r1; c=relaxed/relaxed; t=1795780800; " +
        "h=from:from:to:to:subject:subject:date:date:message-id:message-id:mime-version:mime-version:content-type:content-type; " +
        "bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=";

    public static ReadOnlySequence<byte> Build(int size)
    {
        var head = "From: <app@tenant-a.example>\r\nTo: <x@example.net>\r\nDate: Sat, 28 Nov 2026 12:00:00 +0000\r\nMIME-Version: 1.0\r\n" +
            "Content-Type: text/plain; charset=us-ascii\r\nSubject: bench run 1234\r\nMessage-ID: <1234.run@loadgen.bench>\r\n\r\n";
        var body = new StringBuilder();
        var line = 0;
        while (head.Length + body.Length < size)
        {
            var text = $"{line++:D6} The quick brown fox jumps over the lazy dog; benchmark body text, line padding.";
            var take = Math.Min(text.Length, Math.Max(1, size - head.Length - body.Length - 2));
            body.Append(text.AsSpan(0, take)).Append("\r\n");
        }

        var received = "Received: from client (localhost [127.0.0.1]) by gateway with ESMTP id 0123456789; Sat, 28 Nov 2026 12:00:00 +0000\r\n";
        var chunk = new byte[64 * 1024];
        var n = Encoding.ASCII.GetBytes(received + head + body, chunk);
        var offset = Encoding.ASCII.GetByteCount(received);
        return new ReadOnlySequence<byte>(chunk, 0, n).Slice(offset);
    }

    public static ArraySegment<byte> Segment(ReadOnlySequence<byte> message) =>
        MemoryMarshal.TryGetArray(message.First, out var segment) ? segment : throw new InvalidOperationException("not array-backed");
}
