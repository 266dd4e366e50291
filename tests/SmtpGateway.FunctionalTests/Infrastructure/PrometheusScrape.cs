using System.Globalization;
using System.Text;

namespace SmtpGateway.FunctionalTests.Infrastructure;

/// <summary>One sample of a Prometheus text-format page: metric name, labels, value.</summary>
internal sealed record PrometheusSample(string Name, IReadOnlyDictionary<string, string> Labels, double Value);

/// <summary>
/// A scrape of <c>/metrics</c> parsed just enough for tests (text format 0.0.4): samples with their labels, and the
/// families' <c># TYPE</c> lines. A line it cannot read fails the parse: a malformed page is a finding, not noise.
/// </summary>
internal sealed class PrometheusScrape
{
    PrometheusScrape(string text, IReadOnlyList<PrometheusSample> samples, IReadOnlyList<string> types)
    {
        Text = text;
        Samples = samples;
        Types = types;
    }

    public string Text { get; }

    public IReadOnlyList<PrometheusSample> Samples { get; }

    /// <summary>Family names in the order of their <c># TYPE</c> lines (a name twice is a page Prometheus refuses).</summary>
    public IReadOnlyList<string> Types { get; }

    public static async Task<PrometheusScrape> GetAsync(HttpClient client, CancellationToken cancellationToken)
    {
        using var response = await client.GetAsync(new Uri("metrics", UriKind.Relative), cancellationToken);
        var text = await response.Content.ReadAsStringAsync(cancellationToken);
        if (!response.IsSuccessStatusCode)
        {
            throw new InvalidOperationException($"GET /metrics answered {(int)response.StatusCode}: {text}");
        }

        return Parse(text);
    }

    public static PrometheusScrape Parse(string text)
    {
        var samples = new List<PrometheusSample>();
        var types = new List<string>();
        foreach (var raw in text.Split('\n'))
        {
            var line = raw.TrimEnd('\r');
            if (line.Length == 0)
            {
                continue;
            }

            if (line.StartsWith("# TYPE ", StringComparison.Ordinal))
            {
                types.Add(line["# TYPE ".Length..].Split(' ')[0]);
                continue;
            }

            if (line.StartsWith('#'))
            {
                continue;
            }

            samples.Add(ParseSample(line));
        }

        return new PrometheusScrape(text, samples, types);
    }

    /// <summary>The sum over every series of <paramref name="name"/> whose labels include all of <paramref name="labels"/> (0 when none).</summary>
    public double Value(string name, params (string Key, string Value)[] labels) =>
        Samples.Where(s => s.Name == name && labels.All(l => s.Labels.TryGetValue(l.Key, out var v) && v == l.Value)).Sum(s => s.Value);

    public bool Has(string name, params (string Key, string Value)[] labels) =>
        Samples.Any(s => s.Name == name && labels.All(l => s.Labels.TryGetValue(l.Key, out var v) && v == l.Value));

    static PrometheusSample ParseSample(string line)
    {
        var brace = line.IndexOf('{', StringComparison.Ordinal);
        var space = line.IndexOf(' ', StringComparison.Ordinal);
        var labels = new Dictionary<string, string>(StringComparer.Ordinal);
        string name;
        string rest;
        if (brace >= 0 && (space < 0 || brace < space))
        {
            name = line[..brace];
            var i = brace + 1;
            while (line[i] != '}')
            {
                var eq = line.IndexOf('=', i);
                var key = line[i..eq];
                if (line[eq + 1] != '"')
                {
                    throw new FormatException($"label value not quoted: {line}");
                }

                var value = new StringBuilder();
                var j = eq + 2;
                for (; line[j] != '"'; j++)
                {
                    if (line[j] == '\\')
                    {
                        j++;
                        value.Append(line[j] switch { 'n' => '\n', var c => c });
                    }
                    else
                    {
                        value.Append(line[j]);
                    }
                }

                labels[key] = value.ToString();
                i = j + 1;
                if (line[i] == ',')
                {
                    i++;
                }
            }

            rest = line[(i + 1)..].Trim();
        }
        else
        {
            name = line[..space];
            rest = line[(space + 1)..].Trim();
        }

        var number = rest.Split(' ')[0];
        var parsed = number switch
        {
            "+Inf" => double.PositiveInfinity,
            "-Inf" => double.NegativeInfinity,
            "NaN" => double.NaN,
            _ => double.Parse(number, NumberStyles.Float, CultureInfo.InvariantCulture),
        };
        return new PrometheusSample(name, labels, parsed);
    }
}
