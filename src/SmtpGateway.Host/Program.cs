using SmtpGateway.Cli;

return await GatewayCli.Build().Parse(args).InvokeAsync().ConfigureAwait(false);
