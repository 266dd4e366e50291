using System.Collections.Concurrent;
using System.Text;
using SmtpGateway.Vault;

namespace SmtpGateway.Tests.Fakes;

/// <summary>
/// <see cref="IUpstreamCredentials"/> in process, for Delivery's unit tests: versions per (tenant, name), a rotation that
/// gives the previous version a grace window on the test's clock, and a record of every secret buffer handed out (so a
/// test can check it was zeroed after AUTH), every open and every refusal. The real vault is src/SmtpGateway/Vault.
/// </summary>
internal sealed class FakeUpstreamCredentials(TimeProvider time) : IUpstreamCredentials
{
    readonly Lock _gate = new();
    readonly Dictionary<(string Tenant, string Name), List<(UpstreamCredentialVersion Version, byte[] Secret)>> _store = [];

    /// <summary>Every buffer given to an <see cref="UpstreamSecret"/>, in order; zero after the secret was disposed.</summary>
    public ConcurrentQueue<byte[]> Handed { get; } = new();

    /// <summary>(version, purpose, queue id) of every OpenAsync.</summary>
    public ConcurrentQueue<(UpstreamCredentialVersion Version, string Purpose, string? QueueId)> Opens { get; } = new();

    /// <summary>(version, queue id, reply) of every Refused.</summary>
    public ConcurrentQueue<(UpstreamCredentialVersion Version, string? QueueId, string Reply)> Refusals { get; } = new();

    /// <summary>When set, OpenAsync throws this (an HSM down, a record that does not decrypt, a vault bug).</summary>
    public Exception? OpenFails { get; set; }

    /// <summary>Stores version 1 of a credential (vault set).</summary>
    public UpstreamCredentialVersion Set(string tenant, string name, string user, string secret, UpstreamCredentialKind kind = UpstreamCredentialKind.Password)
    {
        lock (_gate)
        {
            Assert.False(_store.ContainsKey((tenant, name)), "use Rotate");
            var version = new UpstreamCredentialVersion(tenant, name, 1, kind, user, time.GetUtcNow(), null);
            _store[(tenant, name)] = [(version, Encoding.UTF8.GetBytes(secret))];
            return version;
        }
    }

    /// <summary>Stores the next version (vault rotate): the current one retires at now + <paramref name="grace"/>.</summary>
    public UpstreamCredentialVersion Rotate(string tenant, string name, string secret, TimeSpan grace)
    {
        lock (_gate)
        {
            var list = _store[(tenant, name)];
            var now = time.GetUtcNow();
            for (var i = 0; i < list.Count; i++)
            {
                if (list[i].Version.RetiresAt is null)
                {
                    list[i] = (list[i].Version with { RetiresAt = now + grace }, list[i].Secret);
                }
            }

            var last = list[^1].Version;
            var version = last with { Version = last.Version + 1, Created = now, RetiresAt = null };
            list.Add((version, Encoding.UTF8.GetBytes(secret)));
            return version;
        }
    }

    public IReadOnlyList<UpstreamCredentialVersion> Usable(string tenant, string name)
    {
        lock (_gate)
        {
            var now = time.GetUtcNow();
            return _store.TryGetValue((tenant, name), out var list)
                ? [.. list.Select(e => e.Version).Where(v => v.RetiresAt is null || v.RetiresAt > now).OrderByDescending(v => v.Version)]
                : [];
        }
    }

    public ValueTask<UpstreamSecret> OpenAsync(UpstreamCredentialVersion version, string purpose, string? queueId, CancellationToken cancellationToken)
    {
        Opens.Enqueue((version, purpose, queueId));
        if (OpenFails is { } failure)
        {
            throw failure;
        }

        byte[] copy;
        lock (_gate)
        {
            copy = _store[(version.Tenant, version.Name)].Single(e => e.Version.Version == version.Version).Secret.ToArray();
        }

        Handed.Enqueue(copy);
        return ValueTask.FromResult(new UpstreamSecret(version, copy));
    }

    public void Refused(UpstreamCredentialVersion version, string? queueId, string reply) => Refusals.Enqueue((version, queueId, reply));
}
