"""The control plane: CampaignManager, the `campaign` CLI, the embedded dev stack."""
