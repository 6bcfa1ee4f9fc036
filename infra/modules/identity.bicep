// The app's user-assigned managed identity. One identity for the host (AzureWebJobsStorage),
// the queue triggers (ServiceBusConnection), the deployment package, Key Vault and telemetry,
// so every grant is visible on one principal and survives re-creating the function app.

@description('Name of the user-assigned managed identity.')
param name string

@description('Region of the identity.')
param location string

@description('Tags for the identity.')
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output clientId string = identity.properties.clientId
output principalId string = identity.properties.principalId
